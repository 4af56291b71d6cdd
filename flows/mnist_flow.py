"""The MNIST training pipeline as one Prefect flow.

    download/split -> preprocess -> train -> evaluate -> register (gate: promote or reject)

Run it: `python flows/mnist_flow.py --help`. Each stage's logic is in the matching module of `tasks/`.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # parse the command line before Prefect (1.5 s to import) loads
    from flows.cli import parse_args

    CLI_ARGS = parse_args()

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from prefect import flow
from prefect.runtime import flow_run

from flows.parameters import validate_parameters
from tasks.errors import PipelineError
from tasks.evaluate import evaluate
from tasks.models import training_config
from tasks.paths import BUNDLED_MNIST_DIR, ArtifactPaths
from tasks.preprocess import preprocess
from tasks.register import register
from tasks.registry import Registry
from tasks.split import download_split, is_intact, make_recipe
from tasks.train import train


def _writable(directory: Path) -> Path:
    """Create `directory` and check it takes files, before any work is done."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PipelineError(
            f"Artifacts directory {directory} is not writable ({error.strerror}). Pass a writable "
            "folder with --artifacts-dir or set MNIST_ARTIFACTS_DIR."
        ) from error
    return directory


def _run_name() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{(flow_run.get_id() or os.getpid())!s:.8}"


@flow(name="mnist-training-pipeline", log_prints=True)
def mnist_pipeline(
    preset: str = "cnn",
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    patience: Optional[int] = None,
    seed: int = 42,
    validation_fraction: float = 0.1,
    threshold: float = 0.97,
    data_source: str = "bundle",
    bundle_dir: Optional[str] = None,
    artifacts_dir: Optional[str] = None,
) -> dict:
    """Train an MNIST classifier and promote it to production if it passes the gate.

    See `flows/parameters.py` (or `--help`) for what each parameter means and allows.
    """
    params = validate_parameters(dict(locals()))
    paths = ArtifactPaths.resolve(params.artifacts_dir)
    _writable(paths.root)
    bundle = Path(params.bundle_dir).expanduser().resolve() if params.bundle_dir else BUNDLED_MNIST_DIR
    recipe = make_recipe(params.data_source, bundle, params.validation_fraction, params.seed)
    config = training_config(params.preset, params.seed, epochs=params.epochs, batch_size=params.batch_size,
                             learning_rate=params.learning_rate, patience=params.patience)
    run_dir = paths.runs / _run_name()

    split_task = download_split.with_options(
        result_storage=paths.prefect_results,  # a stable path, so later runs find the cache
        refresh_cache=not is_intact(recipe.split_dir(paths.splits)),  # never trust a damaged cache hit
    )
    manifest = split_task(recipe, str(bundle), str(paths.splits), str(paths.tfds_data))
    data = preprocess(manifest)
    trained = train(config, data, str(run_dir), str(paths.tensorboard / run_dir.name))
    evaluation = evaluate(trained, data, str(run_dir))
    decision = register(trained, evaluation, data, str(paths.registry), params.threshold,
                        {"split_recipe_key": recipe.key, "data_source": params.data_source})

    registry = Registry(paths.registry)
    return {
        "version": decision.candidate,
        "preset": config.preset,
        "accuracy": evaluation.accuracy,
        "accuracy_interval_95": list(evaluation.interval_95),
        "promoted": decision.promoted,
        "reason": decision.reason,
        "production": registry.production(),
        "version_dir": str(registry.version_dir(decision.candidate)),
        "run_dir": str(run_dir),
        "decision_log": str(registry.decision_log),
    }


if __name__ == "__main__":
    from flows.cli import run

    sys.exit(run(mnist_pipeline, *CLI_ARGS))
