"""The `mnist-pipeline` command classifying real MNIST digits with the real model, as a user runs it."""

from __future__ import annotations

import json
import subprocess

import pytest

from mnist_pipeline.core.modelling.models import load_model, predict_probabilities
from mnist_pipeline.core.storage.paths import bundled_mnist_dir
from support.commands import ENTRY_POINT, run_cli
from support.pictures import write_png

pytestmark = pytest.mark.slow


def test_predict_pictures_as_json_and_text(mlp_artifacts, split_files, trained_mlp, tmp_path):
    images, _ = split_files.load("test")
    files = [str(write_png(tmp_path / f"{i}.png", images[i])) for i in range(20)]
    write_png(tmp_path / "inverted.png", 255 - images[20])

    result = run_cli("predict", *files, "--json", "--top-k", "2", "--artifacts-dir", str(mlp_artifacts))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["model"] == {"version": "v0001", "production": True}
    expected = predict_probabilities(load_model(trained_mlp.model_path), images[:21]).argmax(1)
    assert [p["file"] for p in output["predictions"]] == files
    assert [p["top"][0]["class"] for p in output["predictions"]] == expected[:20].tolist()
    assert all(len(p["top"]) == 2 for p in output["predictions"])

    result = run_cli("predict", "--invert", str(tmp_path / "inverted.png"), "--version", "1",
                     "--artifacts-dir", str(mlp_artifacts))
    assert result.returncode == 0, result.stderr
    header, line = result.stdout.splitlines()
    assert header == "model v0001 (production)"
    assert line.split()[1] == str(expected[20])


def test_predict_piped_into_head_stops_quietly(mlp_artifacts):
    idx = bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz"  # 10,000 lines of output
    result = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{ENTRY_POINT}" predict "{idx}" --artifacts-dir "{mlp_artifacts}" | head -2'],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "model v0001 (production)" and len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
