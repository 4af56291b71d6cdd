"""The MLflow view's switch and its refusals, without a server: off unless a tracking URI is given
(then nothing of MLflow is imported), a URI carrying a password refused, a server that does not
answer named before any work. tests/test_mlflow_server.py checks the view against a real server."""

from __future__ import annotations

import argparse

import pytest

from mnist_pipeline.core.tracking.target import (
    MlflowConfigError,
    MlflowTarget,
    MlflowUnavailable,
    resolve_target,
)
from support.commands import imported_packages
from support.servers import free_port

# The flow's MLflow hooks with no tracking URI: the flow module (which imports the view) is loaded, a
# run's tracking begins, and a registry change is mirrored, as the flow and `registry promote` do.
HOOKS_WITHOUT_URI = """
import argparse, os
os.environ.pop("MLFLOW_TRACKING_URI", None)
from mnist_pipeline.flows import mnist_flow, sweep_flow
from mnist_pipeline.cli.registry import mirror_to_mlflow
from mnist_pipeline.core.modelling.parameters import PipelineParameters
tracking = mnist_flow.FlowTracking.begin(PipelineParameters(), "runs/x", "run", {})
assert tracking.run is None
tracking.finish(None, None, None, "registry")
mirror_to_mlflow(None, argparse.Namespace(mlflow_uri=None, mlflow_experiment=None, mlflow_model="mnist"))
"""


def test_without_a_tracking_uri_mlflow_is_not_imported():
    imported = imported_packages("-c", HOOKS_WITHOUT_URI)
    assert "prefect" in imported and "mnist_pipeline" in imported  # the script did run the flow's module
    assert "mlflow" not in imported


def test_environment_uri_is_used_and_the_option_wins(monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert resolve_target(None) == MlflowTarget("http://from-env:5000", "mnist", "mnist")
    assert resolve_target("http://given:5000", "exp", "m") == MlflowTarget("http://given:5000", "exp", "m")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_target(None) is None and resolve_target("  ") is None


def test_uri_with_a_password_is_refused_without_repeating_it():
    with pytest.raises(MlflowConfigError, match="MLFLOW_TRACKING_PASSWORD") as error:
        resolve_target("https://alice:s3cret@mlflow.example.com")
    assert "s3cret" not in str(error.value)


def test_server_that_does_not_answer_is_named_before_any_work(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the refusal, not the client's retries
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MlflowUnavailable, match="--mlflow-optional") as error:
        MlflowTarget(uri).check()
    assert uri in str(error.value)


def test_sync_mlflow_without_a_server_says_how_to_give_one(monkeypatch):
    from mnist_pipeline.cli.registry import _sync_mlflow
    from mnist_pipeline.core.support.errors import PipelineError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = argparse.Namespace(artifacts_dir=None, mlflow_uri=None, mlflow_experiment=None, mlflow_model="mnist")
    with pytest.raises(PipelineError, match="--mlflow-uri URI or set MLFLOW_TRACKING_URI"):
        _sync_mlflow(args)
