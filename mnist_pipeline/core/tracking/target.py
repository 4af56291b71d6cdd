"""Where the MLflow view goes, and the client that talks to it.

The tracking URI comes from `--mlflow-uri` (the flow's `mlflow_uri` parameter) or MLflow's own
`MLFLOW_TRACKING_URI`; credentials only from MLflow's own variables (`MLFLOW_TRACKING_USERNAME`,
`MLFLOW_TRACKING_PASSWORD`, `MLFLOW_TRACKING_TOKEN`), which its client reads itself: a URI carrying a
password is refused, because parameters are shown in Prefect's UI and logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mnist_pipeline.core.support.errors import PermanentError, PipelineError

URI_ENV_VAR = "MLFLOW_TRACKING_URI"  # MLflow's own, read by its client too
EXPERIMENT_ENV_VAR = "MLFLOW_EXPERIMENT_NAME"  # MLflow's own
DEFAULT_EXPERIMENT = "mnist"
DEFAULT_MODEL = "mnist"
PRODUCTION_ALIAS = "production"
# MLflow's client retries a failing request 7 times with doubling waits (minutes in all): too long to
# hold a training run for a view; and it prints each run's URL on stdout (the view logs its own link).
# These apply unless the environment sets them.
CLIENT_DEFAULTS = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class MlflowConfigError(PermanentError):
    """A tracking URI or name that cannot work as given."""


class MlflowUnavailable(PipelineError):
    """The tracking server did not answer."""


@dataclass(frozen=True)
class MlflowTarget:
    """An MLflow tracking server (and its model registry), the experiment runs go to, and the name of
    the registered model that mirrors the project's registry."""

    uri: str
    experiment: str = DEFAULT_EXPERIMENT
    model_name: str = DEFAULT_MODEL

    @property
    def has_ui(self) -> bool:
        return urlsplit(self.uri).scheme in ("http", "https")

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        """The run's page in the MLflow UI (None for a store without a UI, e.g. a folder)."""
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if self.has_ui else None

    def client(self) -> Any:
        """An `MlflowClient` of this server and its registry (imports MLflow)."""
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def check(self) -> Any:
        """The client, once the server has answered; raises `MlflowUnavailable` naming the URI if not."""
        client = self.client()
        try:
            client.search_experiments(max_results=1)
        except Exception as error:  # MLflow raises MlflowException, requests' errors or OSError
            raise MlflowUnavailable(
                f"The MLflow tracking server at {self.uri} does not answer ({first_line(error)}). Start it, fix "
                f"--mlflow-uri / ${URI_ENV_VAR}, or pass --mlflow-optional to train without mirroring to MLflow "
                "(then `mnist-pipeline registry sync-mlflow` copies the registry once it is back)."
            ) from error
        return client


def first_line(error: BaseException) -> str:
    """An error's first line (MLflow's messages go on with the whole response)."""
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def resolve_target(
    uri: str | None, experiment: str | None = None, model_name: str | None = None
) -> MlflowTarget | None:
    """The target `uri` names, else `$MLFLOW_TRACKING_URI`; None (MLflow off) when neither is set.
    The experiment defaults to `$MLFLOW_EXPERIMENT_NAME`, then `mnist`; the model name to `mnist`."""
    uri = (uri or os.environ.get(URI_ENV_VAR) or "").strip()
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.password is not None:
        raise MlflowConfigError(
            f"The MLflow tracking URI for {parts.hostname} carries a password; it would show in logs and in "
            "Prefect's parameters. Give the URI without it and set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment instead."
        )
    experiment = (experiment or os.environ.get(EXPERIMENT_ENV_VAR) or DEFAULT_EXPERIMENT).strip()
    model_name = (model_name or DEFAULT_MODEL).strip()
    if not experiment or not model_name:
        raise MlflowConfigError("The MLflow experiment and registered model names must not be empty.")
    return MlflowTarget(uri, experiment, model_name)
