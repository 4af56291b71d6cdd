"""Reads of a Prefect server's state, which settles after a flow run ends: task runs, logs and
artifacts reach the server as events and in batches, so each read waits until what it needs is there."""

from __future__ import annotations

from support.polling import wait_until

STAGES = ("download-split", "preprocess", "train", "evaluate", "register")
FINAL_TASK_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def task_runs(client, flow_run_id) -> dict[str, list]:
    """{stage name: its task runs} of one flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    found: dict[str, list] = {}
    for run in runs:
        found.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return found


def settled_task_runs(client, flow_run_id, stages: tuple[str, ...] = STAGES, timeout: float = 60) -> dict[str, list]:
    """`task_runs` once every one of `stages` has a task run and every task run is in a final state."""

    def settled(runs: dict[str, list]) -> bool:
        return set(stages) <= set(runs) and all(
            run.state is not None and run.state.type.value in FINAL_TASK_STATES
            for group in runs.values()
            for run in group
        )

    return wait_until(lambda: task_runs(client, flow_run_id), settled, timeout)


def logs(client, flow_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    records = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(record.message for record in records)


def logs_containing(client, flow_run_id, *needles: str, timeout: float = 60) -> str:
    """The flow run's logs, once all of `needles` are in them."""
    return wait_until(lambda: logs(client, flow_run_id), lambda text: all(n in text for n in needles), timeout)


def artifact_types(client, flow_run_id) -> dict[str, str]:
    """{artifact key: type} of one flow run."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {artifact.key: artifact.type for artifact in found}
