"""The project's registry mirrored as one MLflow registered model: each version an MLflow model version,
the `production` alias on the version that is production in the registry.

`sync_registry` is idempotent and reads only the registry (the source of truth): it adds the versions
MLflow lacks (oldest first, so a registry mirrored from its start has MLflow version N for vN), brings
each version's tags (project version, model SHA-256, decision) up to date and moves the alias. It is
what a tracked run does after registering, what a promotion or rollback does after changing
production, and what `mnist-pipeline registry sync-mlflow` does for a server that was down or added
later.

The alias and its bound: after setting the alias the sync reads production again, and sets it again
until the two agree. So when several processes change production at once (team mode), the last alias
written is one its writer saw as production after writing it, and any later move of production is
followed by its own sync: once every sync has finished, the alias names production. Between a move and
its sync (or while MLflow is unreachable, until the next sync), the alias lags.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_pipeline.core.registry import Registry
from mnist_pipeline.core.registry.backend import RegistryError
from mnist_pipeline.core.tracking.run_log import FLOW_RUN_TAG, RunLog, experiment_id, find_run
from mnist_pipeline.core.tracking.target import PRODUCTION_ALIAS, MlflowTarget

VERSION_TAG = "mnist.version"
SHA_TAG = "mnist.model_sha256"
DECISION_TAG = "mnist.decision"
REASON_TAG = "mnist.decision_reason"
SYNC_RUN_TAG = "mnist.registry_sync"  # on a run made to hold a version no tracked run registered
MODEL_ARTIFACT = "model"
LIGHT_FOLDER = "litert"  # in an MLflow model folder: the light model, the pyfunc flavour's data
LIGHT_LOADER = "mnist_litert"  # the pyfunc loader module, a copy of core/modelling/litert.py
MAX_ROUNDS = 20  # production moved this often during one sync: stop (the movers sync it)


@dataclass
class SyncResult:
    """What one sync changed in MLflow."""

    model_name: str
    added: dict[str, str] = field(default_factory=dict)  # project version -> MLflow version
    retagged: list[str] = field(default_factory=list)
    production: str | None = None
    alias_moved: bool = False

    def lines(self) -> list[str]:
        name = self.model_name
        said = [f"added {version} as {name} version {number}" for version, number in self.added.items()]
        said += [f"updated the tags of {version}" for version in self.retagged]
        if self.alias_moved:
            said.append(
                f"moved {name}@{PRODUCTION_ALIAS} to {self.production}"
                if self.production
                else f"removed {name}@{PRODUCTION_ALIAS} (no production version)"
            )
        return said


def sync_registry(registry: Registry, target: MlflowTarget, client: Any) -> SyncResult:
    """Bring the registered model `target.model_name` in step with `registry` (see the module's docstring)."""
    name = target.model_name
    result = SyncResult(name)
    _ensure_registered_model(client, name)
    mirrored = _mirrored_versions(client, name)
    statuses, reasons = registry.statuses(), _last_reasons(registry)
    for version in statuses:  # oldest first; one registered since (another machine's) is left to its own sync
        record = registry.read_version(version)
        tags = {
            VERSION_TAG: version,
            SHA_TAG: str(record["model_sha256"]),
            DECISION_TAG: statuses[version],
            REASON_TAG: reasons.get(version, "")[:4000],
        }
        if version not in mirrored:
            mirrored[version] = _add_version(registry, target, client, version, tags, record.get("flow_run_id"))
            result.added[version] = mirrored[version].version
            continue
        found = mirrored[version]
        if found.tags.get(SHA_TAG) != tags[SHA_TAG]:
            raise RegistryError(
                f"MLflow model {name} version {found.version} mirrors a {version} with another model (SHA-256 "
                f"{found.tags.get(SHA_TAG)}, not {tags[SHA_TAG]}): another registry is mirrored under this name. "
                "Give this registry a registered model of its own (--mlflow-model NAME)."
            )
        stale = {key: value for key, value in tags.items() if found.tags.get(key) != value}
        for key, value in stale.items():
            client.set_model_version_tag(name, found.version, key, value)
        if stale:
            result.retagged.append(version)
    result.production, result.alias_moved = _align_alias(registry, client, name, mirrored)
    return result


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="The MNIST pipeline's registry, mirrored.")
        except MlflowException:
            client.get_registered_model(name)  # created by another process meanwhile, else this raises


def _mirrored_versions(client: Any, name: str) -> dict[str, Any]:
    """{project version: its MLflow model version}. Two processes adding the same version at once can
    both create one: the lower-numbered is kept (whoever sees the higher sees it too), and the other
    deleted, by whichever sync gets there first."""
    from mlflow.exceptions import MlflowException

    by_version: dict[str, list[Any]] = {}
    for found in client.search_model_versions(f"name = '{name}'"):
        if VERSION_TAG in found.tags:
            by_version.setdefault(found.tags[VERSION_TAG], []).append(found)
    mirrored = {}
    for version, found in by_version.items():
        kept, *extra = sorted(found, key=lambda model_version: int(model_version.version))
        for duplicate in extra:
            try:
                client.delete_model_version(name, duplicate.version)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":  # else another sync deleted it meanwhile
                    raise
        mirrored[version] = kept
    return mirrored


def _last_reasons(registry: Registry) -> dict[str, str]:
    """Each version's last decision, in words (the gate's reason; who and why for a person's decision).
    An `unchanged` run and a refused manual promotion change no version's status, nor its reason."""
    reasons: dict[str, str] = {}
    for record in registry.decisions():
        said = record.reason + (f" ({record.who}: {record.why})" if record.who else "")
        if record.action == "rollback" and record.production_before:
            reasons[record.production_before] = f"rolled back: {said}"
        if record.candidate and record.action != "unchanged" and (record.action != "promote" or record.promoted):
            reasons[record.candidate] = said
    return reasons


def _add_version(
    registry: Registry, target: MlflowTarget, client: Any, version: str, tags: dict[str, str], flow_run_id: str | None
) -> Any:
    """Log `version`'s model (its registered `.keras` file, byte for byte) as a Keras model in the MLflow
    run of the flow run that registered it (else in a run made for it) and make it a model version.
    A version with a light model gets it as its pyfunc flavour (`_light_pyfunc`)."""
    experiment = experiment_id(client, target.experiment)
    run_id = (flow_run_id and find_run(client, experiment, FLOW_RUN_TAG, flow_run_id)) or find_run(
        client, experiment, SYNC_RUN_TAG, version
    )
    if run_id is None:
        holder = RunLog.start(target, client, f"registry {version}", {}, {SYNC_RUN_TAG: version, VERSION_TAG: version})
        holder.end()
        run_id = holder.run_id
    with tempfile.TemporaryDirectory(prefix="mnist-mlflow-") as folder:
        saved = Path(folder) / MODEL_ARTIFACT
        _save_keras_flavor(registry.model_path(version), saved, light := registry.light_model_path(version))
        if light is not None:
            _light_pyfunc(light, saved)
        client.log_artifacts(run_id, str(Path(folder) / MODEL_ARTIFACT), MODEL_ARTIFACT)
    client.create_model_version(
        target.model_name, f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id, tags=tags, description=f"Registry {version}"
    )
    return _mirrored_versions(client, target.model_name)[version]


def _save_keras_flavor(model_path: Path, destination: Path, light: Path | None) -> None:
    """An MLflow Keras model folder holding the `.keras` file at `model_path` unchanged (so its SHA-256
    is the registry's), with its input and output signature and pinned requirements (MLflow would
    otherwise load the model in a subprocess to infer them; LiteRT's too when there is a `light` model)."""
    import importlib.metadata

    from mnist_pipeline.core.modelling.models import load_model

    model = load_model(model_path)  # first: TensorFlow and Keras imported as `import_tensorflow` does
    import keras
    import mlflow.keras
    import numpy as np
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(model.inputs[0].dtype), (-1, *model.input_shape[1:]), "image")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, *model.output_shape[1:]), "probabilities")]),
    )
    mlflow.keras.save_model(
        model,
        str(destination),
        signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
        + ([f"ai-edge-litert=={importlib.metadata.version('ai-edge-litert')}"] if light else []),
    )
    [saved] = (destination / "data").glob("*.keras")
    shutil.copyfile(model_path, saved)


def _light_pyfunc(light: Path, destination: Path) -> None:
    """Make the light model the pyfunc flavour of the MLflow model folder `destination` (MLflow's Keras
    flavour made Keras' own): `mlflow.pyfunc.load_model` then runs it on LiteRT, without TensorFlow, and
    `mlflow.keras.load_model` still loads the `.keras` file. The loader is a copy of `litert.py`, which
    imports nothing of this project, in the model's `code/`: loading needs numpy and `ai-edge-litert`,
    not this package."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from mnist_pipeline.core.modelling import litert

    (destination / LIGHT_FOLDER).mkdir()
    shutil.copyfile(light, destination / LIGHT_FOLDER / light.name)
    (destination / "code").mkdir()
    shutil.copyfile(litert.__file__, destination / "code" / f"{LIGHT_LOADER}.py")
    model = Model.load(destination / "MLmodel")
    environment = model.flavors.pop(mlflow.pyfunc.FLAVOR_NAME)[mlflow.pyfunc.ENV]  # the model's, kept
    mlflow.pyfunc.add_to_model(
        model,
        loader_module=LIGHT_LOADER,
        data=f"{LIGHT_FOLDER}/{light.name}",
        code="code",
        conda_env=environment.get("conda"),
        python_env=environment.get("virtualenv"),
    )
    model.save(destination / "MLmodel")


def _align_alias(registry: Registry, client: Any, name: str, mirrored: dict[str, Any]) -> tuple[str | None, bool]:
    """Set (or remove) the alias until it names what the registry reads as production before and after
    the write: (production, whether the alias was changed by this sync).

    Two syncs writing the alias at once (team mode) can have one write refused: MLflow's SQL store adds
    a new alias with a read then an insert, and the second insert breaks the table's unique key
    (400, BAD_REQUEST); a removal can find the alias gone (404). Such a refusal is read again in the
    next round, which sees what the other sync wrote; a refusal in the last round is raised."""
    from mlflow.exceptions import MlflowException

    moved = False
    for _ in range(MAX_ROUNDS):
        refused = None
        production = registry.production()
        if production is not None and production not in mirrored:
            return production, moved  # registered after this sync listed the versions: its own sync moves the alias
        wanted = str(mirrored[production].version) if production else None
        current = client.get_registered_model(name).aliases.get(PRODUCTION_ALIAS)
        if (str(current) if current is not None else None) != wanted:
            try:
                if wanted:
                    client.set_registered_model_alias(name, PRODUCTION_ALIAS, wanted)
                else:
                    client.delete_registered_model_alias(name, PRODUCTION_ALIAS)
            except MlflowException as error:
                refused = error
                continue
            moved = True
        if registry.production() == production:
            return production, moved
    if refused is not None:
        raise refused
    return production, moved
