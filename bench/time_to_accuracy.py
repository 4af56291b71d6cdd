"""Seconds of training until each preset reaches 99.0%, 99.4% and 99.6% validation accuracy, and the
test accuracy of the model it saves, for several seeds, side by side in one run:

    python bench/time_to_accuracy.py                      # cnn and cnn-best, seeds 42, 7 and 1234
    python bench/time_to_accuracy.py --presets cnn mlp --seeds 42
    python bench/time_to_accuracy.py --presets cnn-before cnn   # the default cnn against its old recipe

Each training runs in a fresh process of its own, one after the other (they would share the 2 cores
otherwise), through the train stage's own function (`core.modelling.training.fit`: the preset, its
input pipeline, schedule and early stopping, the seed); only the epochs are timed. The test accuracy
is recomputed from the saved `model.keras` on MNIST's 10,000 test images, with its 95% Wilson
interval. The split is the default run's (bundled MNIST, seed 42, 10% validation), built once into a
temporary folder unless --manifest names one. Results: bench/time_to_accuracy_results.md and .json
(or --output-dir); the ratio columns are each training's time over the default cnn's, and over the
old default's (`cnn-before`, a bench-only preset, when run), with the same seed in the same run
(machines of one kind differ by up to ~1.6x from day to day).

    python bench/time_to_accuracy.py --one --preset cnn --manifest M --targets 0.99   # one training, one JSON line
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.machine import cpu_description  # noqa: E402
from mnist_pipeline.core.data.mnist import IMAGE_SHAPE  # noqa: E402
from mnist_pipeline.core.data.splits import SplitSources, check_split, ensure_split, make_recipe  # noqa: E402
from mnist_pipeline.core.modelling.models import (  # noqa: E402
    PRESETS,
    Preset,
    TrainingConfig,
    conv_pool_layers,
    training_config,
)
from mnist_pipeline.core.storage.paths import bundled_mnist_dir  # noqa: E402
from mnist_pipeline.core.support.stats import wilson_interval  # noqa: E402

TARGETS = (0.990, 0.994, 0.996)  # validation accuracy


def _cnn_before(layers, config):
    return [layers.Reshape((*IMAGE_SHAPE, 1)), *conv_pool_layers(layers, config, (24, 48))]


# The default cnn as it was before issue 23 (commit 36e46a4: no shifts, 24 and 48 filters, 6 epochs),
# a bench-only preset: the time limit for the cnn is twice this one's training time.
PRESETS["cnn-before"] = Preset(
    _cnn_before,
    TrainingConfig(
        "cnn-before", epochs=6, batch_size=128, learning_rate=2e-3, patience=2, seed=42, width=128, dropout=0.3
    ),
    "the default cnn before issue 23",
)
DEFAULT_PRESETS = ("cnn", "cnn-best")
DEFAULT_SEEDS = (42, 7, 1234)
LOG = logging.getLogger("time_to_accuracy")


def _epoch_timer(record: list[dict]):
    """A Keras callback recording each epoch's seconds and validation accuracy."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            total = (record[-1]["train_seconds"] if record else 0.0) + seconds
            record.append(
                {"epoch": epoch + 1, "train_seconds": round(total, 2), "val_accuracy": float(logs["val_accuracy"])}
            )

    return EpochTimer()


def train_once(
    preset: str, seed: int, manifest: Path, epochs: int | None, work: Path, targets: tuple[float, ...] = TARGETS
) -> dict:
    """One training through the train stage's `fit`; its figures as a dict."""
    from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
    from mnist_pipeline.core.modelling.training import fit

    data = check_split(manifest)
    config = training_config(preset, seed, epochs=epochs)
    record: list[dict] = []
    trained = fit(config, data, work / f"{preset}-{seed}", LOG, callbacks=(_epoch_timer(record),))
    images, labels = data.load("test")
    correct = int((predict_probabilities(load_model(trained.model_path), images).argmax(axis=1) == labels).sum())
    low, high = wilson_interval(correct, len(labels))
    return {
        "preset": preset,
        "seed": seed,
        "epochs_planned": config.epochs,
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "train_seconds": round(trained.train_seconds, 1),
        "seconds_to_val": {
            f"{target:.3f}": next((e["train_seconds"] for e in record if e["val_accuracy"] >= target), None)
            for target in targets
        },
        "test_accuracy": correct / len(labels),
        "test_interval_95": [round(low, 4), round(high, 4)],
        "per_epoch": record,
    }


def default_split(folder: Path) -> Path:
    """The default run's split (bundled MNIST, seed 42, 10% validation), built under `folder`."""
    bundle = bundled_mnist_dir()
    return ensure_split(
        make_recipe("bundle", bundle, 0.1, 42), SplitSources(bundle, folder / "tfds"), folder / "splits"
    )


def run_in_own_process(preset: str, seed: int, manifest: Path, epochs: int | None) -> dict:
    command = [sys.executable, __file__, "--one", "--preset", preset, "--seed", str(seed), "--manifest", str(manifest)]
    if epochs:
        command += ["--epochs", str(epochs)]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f}"


def report(results: list[dict], started_at: datetime, loads: tuple[float, ...], wall_seconds: float) -> str:
    cnn_seconds = {r["seed"]: r["train_seconds"] for r in results if r["preset"] == "cnn"}
    before_seconds = {r["seed"]: r["train_seconds"] for r in results if r["preset"] == "cnn-before"}
    lines = [
        "# Time to accuracy: each preset, several seeds, side by side in one run",
        "",
        f"Written by `python bench/time_to_accuracy.py` on {started_at:%Y-%m-%d %H:%M} UTC, "
        f"{cpu_description()} (load average {loads[0]:.2f} at the start), {wall_seconds / 60:.0f} minutes in all. "
        "Each training ran alone, in its own process, through the train stage's `fit`; only epochs are timed. "
        "Validation: 6,000 images held out of MNIST's train set; test: MNIST's 10,000 test images, scored "
        "from the saved model. The ratios are training time over the default cnn's, and over the cnn's before "
        "issue 23 (`cnn-before`, when run), with the same seed.",
        "",
        "| preset | seed | epochs run (best) | training s | ratio to cnn | ratio to cnn-before | s to 99.0% val "
        "| s to 99.4% val | s to 99.6% val | test accuracy | 95% interval |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        ratios = [
            f"{r['train_seconds'] / seconds[r['seed']]:.2f}" if r["seed"] in seconds else ""
            for seconds in (cnn_seconds, before_seconds)
        ]
        reached = [_seconds(r["seconds_to_val"][f"{t:.3f}"]) for t in TARGETS]
        low, high = r["test_interval_95"]
        lines.append(
            f"| {r['preset']} | {r['seed']} | {r['epochs_run']} ({r['best_epoch']}) | {r['train_seconds']:.0f} "
            f"| {' | '.join(ratios)} | {' | '.join(reached)} | {100 * r['test_accuracy']:.2f}% | {100 * low:.2f}-{100 * high:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/time_to_accuracy.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--presets", nargs="+", choices=sorted(PRESETS), default=list(DEFAULT_PRESETS), help="in this order"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--epochs", type=int, help="override the presets' epochs (a quick smoke run)")
    parser.add_argument("--manifest", type=Path, help="manifest.json of a split (default: the default run's)")
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "bench")
    parser.add_argument("--one", action="store_true", help="one training (--preset, --seed); print its JSON")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="with --one")
    parser.add_argument("--seed", type=int, default=42, help="with --one")
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS), help="with --one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="time-to-accuracy-") as folder:
        manifest = args.manifest or default_split(Path(folder))
        if args.one:
            if not args.preset:
                parser.error("--one needs --preset")
            result = train_once(args.preset, args.seed, manifest, args.epochs, Path(folder), tuple(args.targets))
            print(json.dumps(result))
            return 0
        started, started_at, loads = time.monotonic(), datetime.now(UTC), os.getloadavg()
        results = []
        for preset in args.presets:
            for seed in args.seeds:
                print(f"training {preset}, seed {seed}", file=sys.stderr, flush=True)
                results.append(run_in_own_process(preset, seed, manifest, args.epochs))
                print(json.dumps({k: v for k, v in results[-1].items() if k != "per_epoch"}), file=sys.stderr)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "time_to_accuracy_results.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = report(results, started_at, loads, time.monotonic() - started)
    (args.output_dir / "time_to_accuracy_results.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
