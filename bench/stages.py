"""Stage times of finished flow runs, as the Prefect server recorded them.

A stage's own compute time is its task run's Running -> final state interval (0 for a `Cached` stage,
which does not run). Its span is Pending -> final state: compute plus Prefect's bookkeeping around it,
and for a cached stage the cache lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("download-split", "preprocess", "train", "evaluate", "register")


@dataclass(frozen=True)
class StageTime:
    states: list[str]  # the state history the server holds, oldest first
    compute_seconds: float | None  # None: unknown (a stage that ran, but with no Running state on record)
    span_seconds: float | None


def _stage_time(client, task_run) -> StageTime:
    """Times from the task run's state history. The server builds that history from events the run
    sends; one lost in transit leaves a gap, reported as unknown rather than guessed."""
    states = sorted(client.read_task_run_states(task_run.id), key=lambda state: state.timestamp)
    final = states[-1]
    running = [state for state in states if state.type.value == "RUNNING"]
    span = (final.timestamp - states[0].timestamp).total_seconds()
    if final.name == "Cached":
        return StageTime([state.name for state in states], 0.0, span)
    if not running or states[0].type.value != "PENDING":
        return StageTime([state.name for state in states], None, None)
    return StageTime([state.name for state in states], (final.timestamp - running[0].timestamp).total_seconds(), span)


@dataclass(frozen=True)
class FlowRunTimes:
    started_at: float  # epoch seconds of the flow run's Running state
    ended_at: float  # and of its final state
    stages: dict[str, StageTime]


def stage_times(api_url: str, flow_run_id_prefixes: list[str]) -> dict[str, FlowRunTimes]:
    """{flow run id prefix: FlowRunTimes} for each flow run whose id starts with a prefix."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flow_runs = {str(run.id): run for run in client.read_flow_runs(limit=200)}
        result = {}
        for prefix in flow_run_id_prefixes:
            matches = [run_id for run_id in flow_runs if run_id.startswith(prefix)]
            if len(matches) != 1:
                raise LookupError(f"{len(matches)} flow runs on {api_url} have an id starting with {prefix}")
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_runs[matches[0]].id])))
            times = {run.name.rsplit("-", 1)[0]: _stage_time(client, run) for run in task_runs}
            missing = set(STAGES) - set(times)
            if missing:
                raise LookupError(f"flow run {matches[0]} has no task run for {sorted(missing)}")
            flow_states = sorted(client.read_flow_run_states(flow_runs[matches[0]].id), key=lambda state: state.timestamp)
            running = [state for state in flow_states if state.type.value == "RUNNING"]
            result[prefix] = FlowRunTimes(running[0].timestamp.timestamp(), flow_states[-1].timestamp.timestamp(), times)
        return result
