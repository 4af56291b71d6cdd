"""Continuous training on a real Prefect server: the nightly change check emits an event only when the
data changed since the production model, and the retrain-on-change deployment's trigger starts one
training run on that event.

The deployments are prefect.yaml's, with the shared data parameters pointed at this test's extra
pictures and artifacts folder, and the retraining made small (seed-mlp, one epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devstack.local_server import NIGHTLY_CHECK, PROJECT_ROOT, RETRAIN_ON_CHANGE
from mnist_pipeline.core.registry import open_registry
from support.pictures import hand_made_zero, write_png
from support.polling import wait_until
from support.servers import client_of, local_prefect

pytestmark = pytest.mark.slow

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SMALL_RETRAINING = {"preset": "seed-mlp", "epochs": 1, "threshold": 0.5, "per_class_floor": 0.5}


def prefect_file_for(extra: Path, artifacts: Path, destination: Path) -> Path:
    """prefect.yaml with its shared data parameters set to `extra` and `artifacts`, and the retraining small."""
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    for line, value in (
        ("    extra_data: null\n", f"    extra_data: {extra}\n"),
        ("    artifacts_dir: null\n", f"    artifacts_dir: {artifacts}\n"),
        (
            "    parameters: *data\n    triggers:",
            f"    parameters: {{<<: *data, {', '.join(f'{k}: {v}' for k, v in SMALL_RETRAINING.items())}}}\n"
            "    triggers:",
        ),
    ):
        assert text.count(line) == 1, line
        text = text.replace(line, value)
    destination.write_text(text)
    return destination


@pytest.fixture(scope="module")
def setup(tmp_path_factory, prefect_server):
    """Extra pictures, and a registry whose production model was trained on them (in this process,
    on the session's server); then a server of its own with the deployments and a worker."""
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    root = tmp_path_factory.mktemp("continuous")
    extra, artifacts = root / "extra", root / "artifacts"
    (extra / "0").mkdir(parents=True)
    write_png(extra / "0" / "first.png", hand_made_zero())
    summary = mnist_pipeline(**SMALL_RETRAINING, extra_data=str(extra), artifacts_dir=str(artifacts))
    assert summary.promoted, summary
    prefect_file = prefect_file_for(extra, artifacts, root / "prefect.yaml")
    with local_prefect(root / "prefect-home", prefect_file) as local, client_of(local) as client:
        yield client, extra, artifacts


def run_check(client):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(NIGHTLY_CHECK, timeout=0)
    return wait_until(
        lambda: client.read_flow_run(flow_run.id),
        lambda run: run.state is not None and run.state.type.value in FINAL_STATES,
        timeout=300,
        interval=2,
    )


def retrain_runs(client) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(RETRAIN_ON_CHANGE)
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


def test_no_change_no_training_then_a_new_picture_one_training(setup):
    client, extra, artifacts = setup
    unchanged = run_check(client)
    assert (unchanged.state.type.value, unchanged.state.name) == ("COMPLETED", "Unchanged"), unchanged.state

    write_png(extra / "0" / "second.png", hand_made_zero(13.0))
    changed = run_check(client)
    assert (changed.state.type.value, changed.state.name) == ("COMPLETED", "Changed"), changed.state
    [retraining] = wait_until(lambda: retrain_runs(client), bool, timeout=120, interval=2)
    finished = wait_until(
        lambda: client.read_flow_run(retraining.id),
        lambda run: run.state is not None and run.state.type.value in FINAL_STATES,
        timeout=900,
        interval=2,
    )
    assert finished.state.type.value == "COMPLETED", finished.state
    # one training in all: the check that found no change started none (its event would be older)
    assert [run.id for run in retrain_runs(client)] == [retraining.id]
    registry = open_registry(artifacts / "registry")
    newest = registry.versions()[-1]
    assert newest == "v0002" and registry.read_json(newest, "params.json")["extra_pictures"] == 2
    assert json.loads((registry.version_dir(newest) / "version.json").read_text())["flow_run_id"] == str(retraining.id)
