"""`mnist-pipeline predict`: classify files with a registered model and print the top classes.

A version with a light model (`model.tflite`, verified at registration or by `registry convert`) runs on
LiteRT and TensorFlow is never imported; one without runs on Keras, which loads TensorFlow only when
the model does (after every file was read and checked)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.cli import options
from mnist_pipeline.core.data.pictures import InputError, file_kind, read_inputs
from mnist_pipeline.core.modelling.litert import LightModel
from mnist_pipeline.core.modelling.models import load_model, predict_probabilities, top_classes
from mnist_pipeline.core.registry import Registry, RegistryError


def add_parser(subparsers: options.Subparsers) -> None:
    parser = options.command(subparsers, "predict", predict)
    parser.add_argument("files", nargs="+", metavar="FILE", help="picture, .npy array or IDX file")
    parser.add_argument(
        "--version",
        type=options.version,
        help="registered version to use: N, vN or v000N (default: the production model)",
    )
    parser.add_argument(
        "--top-k", type=options.top_k, default=3, help="classes to show per image, 1 to 10 (default: %(default)s)"
    )
    options.switch(parser, "json", "print JSON instead of text")
    options.switch(parser, "invert", "the images show dark digits on a light background")
    options.artifacts_dir(parser)


def predict(args: argparse.Namespace) -> int:
    """Classify digit images with the production (or a chosen) model.

    FILEs are pictures (PNG, JPEG, any size or colour mode: laid out as MNIST's digits are, white on
    black in 28x28), .npy arrays or MNIST IDX files of 28x28 images (pixel values 0-255).
    """
    registry = options.registry_at(args.artifacts_dir)
    print(predict_files(args.files, registry, args.version, args.top_k, args.invert, args.json))
    return options.EXIT_OK


@dataclass(frozen=True)
class Prediction:
    """The top classes of one image: `source` is the file, `index` its place in an array file."""

    source: str
    index: int | None
    top: list[tuple[int, float]]

    @property
    def label(self) -> str:
        return self.source if self.index is None else f"{self.source}[{self.index}]"


def load_files(files: list[str], invert: bool) -> tuple[list[tuple[str, int | None]], np.ndarray]:
    """Every image of every file, checked before any model loads: ([(file, index in file)], uint8 [n, 28, 28]).

    Raises one InputError naming each file that cannot be classified, and why.
    """
    names: list[tuple[str, int | None]] = []
    batches: list[np.ndarray] = []
    problems: list[str] = []
    for file in files:
        try:
            images = read_inputs(Path(file), invert)
        except InputError as error:
            problems.append(str(error))
            continue
        is_picture = file_kind(Path(file)) == "picture"  # array files number their images, even one
        names += [(file, None)] if is_picture else [(file, i) for i in range(len(images))]
        batches.append(images)
    if problems:
        raise InputError(f"cannot classify {len(problems)} of {len(files)} file(s):\n  " + "\n  ".join(problems))
    return names, np.concatenate(batches)


def model_version(registry: Registry, requested: str | None) -> str:
    """The version to predict with: the requested one if registered, else production."""
    if requested is None:
        production = registry.production()
        if production is None:
            raise RegistryError(
                f"No production model yet in {registry.location}: train one with `mnist-pipeline run`, or pick "
                "a registered version with --version N (`mnist-pipeline registry list` shows them)."
            )
        return production
    registry.require(requested)
    return requested


def classify(registry: Registry, version: str, images: np.ndarray) -> np.ndarray:
    """Class probabilities [n, 10] from the version's light model, or its `.keras` model if it has none
    (either checked against its registered SHA-256)."""
    light = registry.light_model_path(version)
    if light is not None:
        return LightModel(light, quiet=True).predict(images)  # its first line is the answer
    return predict_probabilities(load_model(registry.model_path(version)), images)


def predict_files(
    files: list[str], registry: Registry, version: str | None, top_k: int, invert: bool, as_json: bool
) -> str:
    """The command's output: one line per image (or JSON)."""
    names, images = load_files(files, invert)
    version = model_version(registry, version)
    is_production = version == registry.production()
    probabilities = classify(registry, version, images)
    predictions = [
        Prediction(source, index, top)
        for (source, index), top in zip(names, top_classes(probabilities, top_k), strict=True)
    ]
    if as_json:
        return json.dumps(
            {
                "model": {"version": version, "production": is_production},
                "predictions": [
                    {
                        "file": p.source,
                        "index": p.index,
                        "top": [{"class": c, "probability": round(prob, 6)} for c, prob in p.top],
                    }
                    for p in predictions
                ],
            },
            indent=2,
        )
    width = max(len(p.label) for p in predictions)
    lines = [f"model {version}{' (production)' if is_production else ''}"]
    lines += [f"{p.label:<{width}}  " + "  ".join(f"{c} ({prob:.4f})" for c, prob in p.top) for p in predictions]
    return "\n".join(lines)
