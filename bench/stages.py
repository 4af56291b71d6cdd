"""Stage times of finished flow runs, as the Prefect server recorded them.

A stage's own compute time is its task run's Running -> final state interval (0 for a `Cached` stage,
which does not run). Its span is Pending -> final state: compute plus Prefect's bookkeeping around it,
and for a cached stage the cache lookup.

The server builds each history from events the run sends, and now and then the first ones of a long
stage never arrive (seen on cold split stages, ~24 s of tfds work: the history holds only
`Completed`). The five stages run one after another, so such a stage's start is taken as the end of
the one before (or the flow run's start), and the stage is marked `inferred`.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("download-split", "preprocess", "train", "evaluate", "register")  # in the order the flow runs them


@dataclass(frozen=True)
class StageTime:
    states: list[str]  # the state history the server holds, oldest first
    compute_seconds: float
    span_seconds: float
    ended_at: float  # epoch seconds of the final state
    inferred: bool  # start taken from the previous stage's end: its first states never reached the server


@dataclass(frozen=True)
class FlowRunTimes:
    started_at: float  # epoch seconds of the flow run's Running state
    ended_at: float  # and of its final state
    stages: dict[str, StageTime]


def _sorted_states(states: list) -> list:
    return sorted(states, key=lambda state: state.timestamp)


def _stage_time(states: list, previous_end: float) -> StageTime:
    final, names = states[-1], [state.name for state in states]
    end = final.timestamp.timestamp()
    running = [state for state in states if state.type.value == "RUNNING"]
    if states[0].type.value != "PENDING" or not (running or final.name == "Cached"):
        return StageTime(names, end - previous_end, end - previous_end, end, inferred=True)
    compute = 0.0 if final.name == "Cached" else end - running[0].timestamp.timestamp()
    return StageTime(names, compute, end - states[0].timestamp.timestamp(), end, inferred=False)


def _flow_run_times(client, flow_run) -> FlowRunTimes:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_states = _sorted_states(client.read_flow_run_states(flow_run.id))
    started = next((s for s in flow_states if s.type.value == "RUNNING"), flow_states[0]).timestamp.timestamp()
    task_runs = {
        run.name.rsplit("-", 1)[0]: run
        for run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    }
    missing = set(STAGES) - set(task_runs)
    if missing:
        raise LookupError(f"flow run {flow_run.id} has no task run for {sorted(missing)}")
    stages, previous_end = {}, started
    for stage in STAGES:
        stages[stage] = _stage_time(_sorted_states(client.read_task_run_states(task_runs[stage].id)), previous_end)
        previous_end = stages[stage].ended_at
    return FlowRunTimes(started, flow_states[-1].timestamp.timestamp(), stages)


def stage_times(api_url: str, flow_run_id_prefixes: list[str]) -> dict[str, FlowRunTimes]:
    """{flow run id prefix: FlowRunTimes} for each flow run whose id starts with a prefix."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flow_runs = {str(run.id): run for run in client.read_flow_runs(limit=200)}
        result = {}
        for prefix in flow_run_id_prefixes:
            matches = [run_id for run_id in flow_runs if run_id.startswith(prefix)]
            if len(matches) != 1:
                raise LookupError(f"{len(matches)} flow runs on {api_url} have an id starting with {prefix}")
            result[prefix] = _flow_run_times(client, flow_runs[matches[0]])
        return result
