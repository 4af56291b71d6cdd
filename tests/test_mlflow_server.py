"""The MLflow view against a real `mlflow server` (started once for the module, stopped by its pid):
the registry's versions and `production` alias after each kind of change, a real run of the flow with
its parameters, curves, test results and model loadable as `models:/NAME@production` (with Keras, and
with pyfunc on its light model without TensorFlow), a cached rerun that refers instead of copying,
MLflow going away mid-run, a failed and a crashed flow run ending their MLflow runs FAILED, and a
sweep's nested runs."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.storage import store
from mnist_pipeline.core.support.errors import ChecksumMismatchError
from mnist_pipeline.core.tracking.model_sync import SHA_TAG, VERSION_TAG, sync_registry
from mnist_pipeline.core.tracking.run_log import FLOW_RUN_TAG
from mnist_pipeline.core.tracking.target import PRODUCTION_ALIAS, MlflowTarget
from support.commands import imported_packages, run_cli
from support.data import bundle_copy, flip_byte
from support.mlflow_server import Relay, machine_mirror, mlflow_server, register_then_sync, results_of
from support.training import copy_run, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


@pytest.fixture
def target(server) -> MlflowTarget:
    """A target of its own: an experiment and a registered model no other test uses."""
    name = f"mnist-{uuid.uuid4().hex[:8]}"
    return MlflowTarget(server, experiment=name, model_name=name)


def mirrored(client, name: str) -> dict[str, str]:
    """{project version: MLflow version} of the registered model `name`."""
    return {found.tags[VERSION_TAG]: str(found.version) for found in client.search_model_versions(f"name = '{name}'")}


def assert_in_step(registry, client, name: str) -> None:
    """MLflow's versions are the registry's, one each, and the alias names production."""
    versions = mirrored(client, name)
    assert sorted(versions) == registry.versions()
    assert len(client.search_model_versions(f"name = '{name}'")) == len(registry.versions())
    alias = client.get_registered_model(name).aliases.get(PRODUCTION_ALIAS)
    production = registry.production()
    assert (str(alias) if alias else None) == (versions[production] if production else None)


def cli_args(target: MlflowTarget, artifacts: Path) -> list[str]:
    return ["--artifacts-dir", str(artifacts), "--mlflow-uri", target.uri, "--mlflow-model", target.model_name]


def test_alias_follows_promotion_rollback_rejection_and_unchanged(
    target, two_versions, tiny_strong, tiny_weak, synthetic_split, tmp_path
):
    registry = open_registry(two_versions / "registry", splits_dir=two_versions / "splits")
    client = target.check()
    result = sync_registry(registry, target, client)  # a server added later: both versions, in order
    assert result.added == {"v0001": "1", "v0002": "2"} and result.alias_moved
    assert_in_step(registry, client, target.model_name)
    first = client.get_model_version(target.model_name, "1")
    assert first.tags[SHA_TAG] == registry.read_version("v0001")["model_sha256"]
    assert first.tags["mnist.decision"] == "promoted"
    assert client.get_model_version(target.model_name, "2").tags["mnist.decision"] == "rejected"
    assert sync_registry(registry, target, client).lines() == []  # idempotent

    forced = run_cli("registry", "promote", "2", "--force", "--reason", "try it", *cli_args(target, two_versions))
    assert forced.returncode == 0, forced.stderr
    assert f"moved {target.model_name}@production to v0002" in forced.stdout
    assert_in_step(registry, client, target.model_name)
    assert client.get_model_version(target.model_name, "2").tags["mnist.decision"] == "promoted"

    rolled_back = run_cli("registry", "rollback", "--reason", "worse", *cli_args(target, two_versions))
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert registry.production() == "v0001"
    assert_in_step(registry, client, target.model_name)
    assert client.get_model_version(target.model_name, "2").tags["mnist.decision"] == "rolled back"

    rejected = register(registry, copy_run(tiny_weak, tmp_path / "weak-again"), synthetic_split, flow_run_id="r3")
    assert rejected.verdict == "rejected" and rejected.candidate == "v0003"
    assert sync_registry(registry, target, client).added == {"v0003": "3"}
    assert_in_step(registry, client, target.model_name)

    unchanged = register(registry, copy_run(tiny_strong, tmp_path / "strong-again", same_weights=True), synthetic_split)
    assert unchanged.verdict == "unchanged"
    assert sync_registry(registry, target, client).lines() == []  # no MLflow version for an unchanged run
    assert_in_step(registry, client, target.model_name)

    import mlflow.keras

    from mnist_pipeline.core.modelling.models import load_model, predict_probabilities

    images, _ = synthetic_split.load("test")
    mlflow.set_tracking_uri(target.uri)
    loaded = mlflow.keras.load_model(f"models:/{target.model_name}@production")
    expected = predict_probabilities(load_model(registry.model_path("v0001")), images)
    assert np.array_equal(predict_probabilities(loaded, images), expected)  # the same call: same batches


def test_registry_change_while_mlflow_is_away_is_a_warning_and_sync_repairs_it(target, two_versions):
    registry = open_registry(two_versions / "registry", splits_dir=two_versions / "splits")
    client = target.check()
    sync_registry(registry, target, client)
    relay = Relay(int(target.uri.rsplit(":", 1)[1]))
    relay.cut()
    away = MlflowTarget(relay.url, target.experiment, target.model_name)
    promoted = run_cli(
        "registry", "promote", "2", "--force", "--reason", "r", *cli_args(away, two_versions),
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    assert registry.production() == "v0002"  # the registry changed, MLflow did not
    assert f"MLflow at {relay.url} not updated" in promoted.stderr and "sync-mlflow" in promoted.stderr
    assert client.get_registered_model(target.model_name).aliases[PRODUCTION_ALIAS] in (1, "1")

    # the repair (`registry sync-mlflow` runs it; the command itself is run in the real-runs test below)
    assert f"moved {target.model_name}@production to v0002" in sync_registry(registry, target, client).lines()
    assert_in_step(registry, client, target.model_name)


def test_two_syncs_setting_the_alias_at_once_both_end_with_it_on_production(target, two_versions):
    """MLflow's SQL store adds a new alias with a read then an insert: of two syncs writing it at the same
    moment, one is often refused (400; bench/ci_results.md). Each sync reads the alias again and ends
    with it on production."""
    registry = open_registry(two_versions / "registry", splits_dir=two_versions / "splits")
    client = target.check()
    sync_registry(registry, target, client)

    def sync_at(start: threading.Barrier):
        start.wait()
        return sync_registry(registry, target, target.client())

    for _ in range(10):
        client.delete_registered_model_alias(target.model_name, PRODUCTION_ALIAS)
        start = threading.Barrier(2, timeout=60)
        with ThreadPoolExecutor(2) as machines:
            results = results_of([machines.submit(sync_at, start) for _ in "ab"], timeout=120)
        assert [result.production for result in results] == ["v0001", "v0001"]
        assert_in_step(registry, client, target.model_name)


def test_two_machines_registering_at_once_leave_the_alias_on_the_stores_production(
    target, s3_env, tiny_strong, tiny_weak, synthetic_split, tmp_path, monkeypatch
):
    """Team mode: two machines (threads, each with a mirror of its own) register into one registry in an
    S3-compatible store at the same moment, twice each, and each syncs MLflow right after, as tracked runs do:
    compare-and-swap conflicts in the store, and syncs adding the same version or the alias at once."""
    url = s3_env.store_url(f"registry-{uuid.uuid4().hex[:8]}")
    runs = [
        copy_run(run, tmp_path / f"run-{n}") for n, run in enumerate([tiny_strong, tiny_weak, tiny_weak, tiny_strong])
    ]
    monkeypatch.setattr(store, "cache_root", machine_mirror)
    start = threading.Barrier(2, timeout=120)
    with ThreadPoolExecutor(2) as machines:
        futures = [
            machines.submit(
                register_then_sync, url, tmp_path / f"machine-{n}", runs[n::2], synthetic_split, target, start
            )
            for n in (0, 1)
        ]
        decisions = [said for said_by_one in results_of(futures, timeout=300) for said in said_by_one]
    registry = open_registry(url)
    assert sorted(said.split()[0] for said in decisions) == registry.versions() == ["v0001", "v0002", "v0003", "v0004"]
    assert registry.check() == []
    assert_in_step(registry, target.check(), target.model_name)


def run_flow(**parameters):
    """(final state, RunSummary or the error) of one run of the flow in this process."""
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    state = mnist_pipeline(**parameters, return_state=True)
    return state, state.result(raise_on_failure=False)


def mlflow_run_of(client, experiment: str, flow_run_id) -> object:
    [run] = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"
    )
    return run


PYFUNC_PREDICT = """
import mlflow.pyfunc, numpy as np
mlflow.set_tracking_uri("{0}")
model = mlflow.pyfunc.load_model("models:/{1}@production")
np.save("{2}/pyfunc.npy", model.predict(np.load("{2}/images.npy")))
"""


def test_real_runs_are_logged_cached_ones_refer_and_an_outage_is_repaired(
    target, prefect_server, tmp_path, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from mnist_pipeline.cli.predict import classify
    from mnist_pipeline.core.data.splits import check_split
    from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
    from mnist_pipeline.core.tracking.run_log import RunLog

    artifacts = tmp_path / "artifacts"
    parameters = dict(
        preset="mlp", epochs=2, threshold=0.9, per_class_floor=0.9, artifacts_dir=str(artifacts),
        mlflow_uri=target.uri, mlflow_experiment=target.experiment, mlflow_model=target.model_name,
    )  # fmt: skip
    state, summary = run_flow(**parameters)
    assert state.is_completed() and summary.promoted, summary
    client = target.check()
    run = mlflow_run_of(client, target.experiment, state.state_details.flow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["preset"] == "mlp" and run.data.params["training.epochs"] == "2"
    assert run.data.params["data_fingerprint"] and run.data.params["split_recipe_key"]  # the split's fingerprint
    assert (
        run.data.params["data_sha256"]
        == json.loads((Path(summary.run_dir) / "metrics.json").read_text())["data_sha256"]
    )
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [point.step for point in client.get_metric_history(run.info.run_id, name)] == [1, 2]
    assert run.data.metrics["test_accuracy"] == summary.accuracy
    low, high = summary.accuracy_interval_95
    assert (run.data.metrics["test_accuracy_low_95"], run.data.metrics["test_accuracy_high_95"]) == (low, high)
    assert {f"test_accuracy_class_{digit}" for digit in range(10)} <= set(run.data.metrics)
    files = {
        item.path
        for folder in ("", "evaluation", "training")
        for item in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "report.md",
        "evaluation/confusion_matrix.png",
        "evaluation/training_curves.png",
        "training/history.json",
    } <= files
    assert run.data.tags["mnist.gate.verdict"] == "promoted" and run.data.tags["mnist.registry.version"] == "v0001"
    with get_client(sync_client=True) as prefect:
        [link] = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mlflow-run"])))
    assert f"{target.uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in link.data

    # the production model, loaded as other services load it, predicts the 10,000 test images as `predict` does
    import mlflow.keras

    registry = open_registry(artifacts / "registry")
    [manifest] = (artifacts / "splits").glob("*/manifest.json")
    images, _ = check_split(manifest).load("test")
    mlflow.set_tracking_uri(target.uri)
    loaded = mlflow.keras.load_model(f"models:/{target.model_name}@production")
    assert len(images) == 10_000
    keras_model = load_model(registry.model_path("v0001"))
    assert np.array_equal(
        loaded.predict(images, batch_size=1000, verbose=0), predict_probabilities(keras_model, images)
    )
    expected = classify(registry, "v0001", images)  # `predict`'s: the light model's, since the version has one

    # pyfunc runs the version's light model, in a process that imports neither TensorFlow nor this project
    assert registry.light_model_path("v0001") is not None
    np.save(tmp_path / "images.npy", images)
    imported = imported_packages("-c", PYFUNC_PREDICT.format(target.uri, target.model_name, tmp_path))
    assert "mlflow" in imported and "ai_edge_litert" in imported
    assert not {"tensorflow", "keras", "mnist_pipeline"} & imported
    probabilities = np.load(tmp_path / "pyfunc.npy")
    assert np.array_equal(probabilities.argmax(axis=1), expected.argmax(axis=1))
    assert np.abs(probabilities - expected).max() <= 1e-5

    # the same inputs again: training and evaluation come from the cache; MLflow gets a reference, no copy
    state, summary = run_flow(**parameters)
    assert summary.verdict == "unchanged", summary
    again = mlflow_run_of(client, target.experiment, state.state_details.flow_run_id)
    assert again.data.tags["mnist.training_from_run"] == run.info.run_id
    assert again.data.tags["mnist.evaluation_from_run"] == run.info.run_id
    assert "val_accuracy" not in again.data.metrics and "test_accuracy" not in again.data.metrics
    assert_in_step(registry, client, target.model_name)

    # MLflow goes away after the run started: the run completes and registers; sync-mlflow repairs MLflow
    relay = Relay(int(target.uri.rsplit(":", 1)[1]))
    log_training = RunLog.log_training

    def cut_first(self, trained):
        relay.cut()
        return log_training(self, trained)

    monkeypatch.setattr(RunLog, "log_training", cut_first)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    state, summary = run_flow(**{**parameters, "epochs": 1, "mlflow_uri": relay.url})
    assert state.is_completed() and summary.version == "v0002", summary
    assert sorted(mirrored(client, target.model_name)) == ["v0001"]
    synced = run_cli("registry", "sync-mlflow", "--mlflow-experiment", target.experiment, *cli_args(target, artifacts))
    assert synced.returncode == 0, synced.stderr
    assert_in_step(registry, client, target.model_name)


def test_a_failed_or_crashed_flow_run_ends_its_mlflow_run_failed(target, prefect_server, tmp_path, monkeypatch):
    from prefect.runtime import flow_run

    from mnist_pipeline.flows import mnist_flow

    client = target.check()
    bundle = bundle_copy(tmp_path / "bundle")
    labels = bundle / "t10k-labels-idx1-ubyte.gz"
    flip_byte(labels, -10)
    parameters = dict(
        preset="mlp", epochs=1, bundle_dir=str(bundle), artifacts_dir=str(tmp_path / "artifacts"),
        mlflow_uri=target.uri, mlflow_experiment=target.experiment, mlflow_model=target.model_name,
    )  # fmt: skip

    # failed: the split stage finds the damaged bundle (after the MLflow run started), no retry helps
    state, error = run_flow(**parameters)
    assert state.is_failed() and isinstance(error, ChecksumMismatchError), error
    failed = mlflow_run_of(client, target.experiment, state.state_details.flow_run_id)
    assert failed.info.status == "FAILED"
    assert str(labels) in failed.data.tags["mnist.failure"]

    # crashed: Ctrl-C in the middle of the run (Prefect marks it Crashed and runs the on_crashed hooks)
    interrupted = []

    def ctrl_c(tag: str) -> None:
        interrupted.append(flow_run.get_id())
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_flow, "tag_run", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_flow(**parameters)
    [flow_run_id] = interrupted
    crashed = mlflow_run_of(client, target.experiment, flow_run_id)
    assert crashed.info.status == "FAILED"
    assert crashed.data.tags["mnist.failure"] == "Execution was aborted by an interrupt signal."


def test_sweep_is_a_parent_run_with_a_nested_run_per_candidate(target, prefect_server, tiny_strong, tmp_path):
    from prefect import flow

    from mnist_pipeline.core.modelling.parameters import PipelineParameters
    from mnist_pipeline.core.runs.sweep import Trial
    from mnist_pipeline.orchestration.mlflow_view import FlowTracking

    trained = tiny_strong[0]
    trials = [
        Trial("c01", trained.config, str(Path(trained.model_path).parent), trained=trained),
        Trial("c02", trained.config, str(tmp_path / "c02"), error="out of memory"),
    ]
    params = PipelineParameters(mlflow_uri=target.uri, mlflow_experiment=target.experiment)

    @flow(name="mlflow-sweep-probe")
    def sweep_probe() -> str:
        tracking = FlowTracking.begin(params, str(tmp_path), "sweep", {})
        tracking.candidates(trials)
        assert tracking.run is not None and not tracking.stopped
        return tracking.run.run_id

    parent = sweep_probe()
    client = target.check()
    experiment = client.get_experiment_by_name(target.experiment).experiment_id
    nested = {
        run.info.run_name: run for run in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
    }
    assert {name: run.info.status for name, run in nested.items()} == {"c01": "FINISHED", "c02": "FAILED"}
    assert nested["c02"].data.tags["mnist.error"] == "out of memory"
    assert len(client.get_metric_history(nested["c01"].info.run_id, "val_accuracy")) == trained.epochs_run
