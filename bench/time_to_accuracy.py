"""Seconds of training until a preset reaches a test accuracy, in its own process:

    python bench/time_to_accuracy.py --preset cnn --target 0.99 --manifest SPLIT/manifest.json

Trains exactly as the train stage does (same preset recipe, model, input pipeline, seed, early stopping
on the validation split) and, after each epoch, scores the test split. Only the epochs count as
training time, not the test scoring between them. The test split never steers training here: it is
looked at, not used, and the production training loop never sees it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_pipeline.core.data.splits import check_split  # noqa: E402
from mnist_pipeline.core.modelling.models import PRESETS, training_config  # noqa: E402
from mnist_pipeline.core.modelling.training import early_stopping, prepare_training  # noqa: E402


def _test_scorer(images, labels, record: list[dict]):
    """A Keras callback timing each epoch, then scoring the test split (outside the timed part)."""
    import keras
    import numpy as np

    class TestScorer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started  # first callback: nothing else ran yet
            probabilities = self.model.predict(images, batch_size=1000, verbose=0)
            accuracy = float((np.argmax(probabilities, axis=1) == labels).mean())
            total = (record[-1]["train_seconds"] if record else 0.0) + seconds
            record.append(
                {
                    "epoch": epoch + 1,
                    "epoch_seconds": round(seconds, 3),
                    "train_seconds": round(total, 3),
                    "test_accuracy": accuracy,
                }
            )

    return TestScorer()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--target", type=float, required=True, help="test accuracy to reach, e.g. 0.99")
    parser.add_argument("--manifest", required=True, help="manifest.json of a split the pipeline built")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs (the --quick smoke run)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    import numpy as np

    data = check_split(Path(args.manifest))
    config = training_config(args.preset, args.seed, epochs=args.epochs)
    model, train_ds, validation_ds = prepare_training(config, data)
    test_images, test_labels = data.load("test")
    record: list[dict] = []
    model.fit(
        train_ds,
        validation_data=validation_ds,
        epochs=config.epochs,
        shuffle=False,
        verbose=0,
        callbacks=[_test_scorer(test_images, test_labels, record), early_stopping(config)],
    )
    final = model.predict(test_images, batch_size=1000, verbose=0)
    reached = [epoch for epoch in record if epoch["test_accuracy"] >= args.target]
    return {
        "preset": config.preset,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "target": args.target,
        "seconds_to_target": reached[0]["train_seconds"] if reached else None,
        "epochs_to_target": reached[0]["epoch"] if reached else None,
        "train_seconds": record[-1]["train_seconds"],
        "final_accuracy": float((np.argmax(final, axis=1) == test_labels).mean()),
        "per_epoch": record,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
