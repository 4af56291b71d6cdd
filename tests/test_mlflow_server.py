"""The MLflow view against a real `mlflow server` (started once for the module, stopped by its pid):
the registry's versions and `production` alias after each kind of change, a real run of the flow with
its parameters, curves, test results and model loadable as `models:/NAME@production`, a cached rerun
that refers instead of copying, MLflow going away mid-run, and a sweep's nested runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.tracking.model_sync import SHA_TAG, VERSION_TAG, sync_registry
from mnist_pipeline.core.tracking.run_log import FLOW_RUN_TAG
from mnist_pipeline.core.tracking.target import PRODUCTION_ALIAS, MlflowTarget
from support.commands import run_cli
from support.mlflow_server import Relay, mlflow_server
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

    unchanged = register(
        registry, copy_run(tiny_strong, tmp_path / "strong-again", same_weights=True), synthetic_split
    )
    assert unchanged.verdict == "unchanged"
    assert sync_registry(registry, target, client).lines() == []  # no MLflow version for an unchanged run
    assert_in_step(registry, client, target.model_name)

    import mlflow.keras

    from mnist_pipeline.core.modelling.models import load_model, predict_probabilities

    images, _ = synthetic_split.load("test")
    mlflow.set_tracking_uri(target.uri)
    loaded = mlflow.keras.load_model(f"models:/{target.model_name}@production")
    expected = predict_probabilities(load_model(registry.model_path("v0001")), images)
    assert np.array_equal(loaded.predict(images, verbose=0), expected)


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

    synced = run_cli("registry", "sync-mlflow", *cli_args(target, two_versions))
    assert synced.returncode == 0, synced.stderr
    assert_in_step(registry, client, target.model_name)
