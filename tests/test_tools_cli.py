"""The `mnist-pipeline` console entry point, run as a user runs it (a separate process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT
from flows.parameters import PipelineParameters
from tasks.evaluate import evaluate_model, load_model, predict_probabilities
from tasks.register import register_candidate
from tasks.registry import Registry

ENTRY_POINT = Path(sys.executable).parent / "mnist-pipeline"


def mnist_pipeline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRY_POINT), *args], capture_output=True, text=True, cwd=PROJECT_ROOT)


@pytest.fixture(scope="module")
def artifacts(trained_mlp, split_files, tmp_path_factory):
    """An artifacts folder whose registry has the session's mlp as production model v0001."""
    root = tmp_path_factory.mktemp("cli-artifacts")
    evaluation = evaluate_model(trained_mlp, split_files, tmp_path_factory.mktemp("eval"))
    assert register_candidate(Registry(root / "registry"), trained_mlp, evaluation, split_files, 0.5, {}, None).promoted
    return root


def test_entry_point_is_installed():
    assert ENTRY_POINT.is_file(), "run `pip install -e .` to install the mnist-pipeline command"


def test_help_answers_at_once_without_loading_prefect_or_tensorflow():
    started = time.perf_counter()
    result = mnist_pipeline("--help")
    assert time.perf_counter() - started < 2.0
    assert result.returncode == 0
    for command in ("run", "predict", "registry"):
        assert command in result.stdout

    imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "tools.main", "--help"],
                             capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert imports.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in imports.stderr.splitlines() if "|" in line}
    assert not imported & {"prefect", "tensorflow", "keras", "PIL"}


@pytest.mark.parametrize("command", [["run"], ["predict"], ["registry", "list"], ["registry", "show"],
                                     ["registry", "promote"], ["registry", "rollback"]])
def test_each_command_has_help(command):
    result = mnist_pipeline(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: mnist-pipeline {' '.join(command)}")


def test_run_takes_the_flows_parameters_and_checks_them_before_any_work(tmp_path):
    help_text = " ".join(mnist_pipeline("run", "--help").stdout.split())
    for name in PipelineParameters.model_fields:
        assert "--" + name.replace("_", "-") in help_text
    assert "--fail-if-not-promoted" in help_text

    result = mnist_pipeline("run", "--threshold", "1.5", "--artifacts-dir", str(tmp_path / "artifacts"))
    assert result.returncode == 2 and "threshold" in result.stderr
    assert not (tmp_path / "artifacts").exists()


def test_predict_pictures_as_json_and_text(artifacts, split_files, trained_mlp, tmp_path):
    images, labels = split_files.load("test")
    files = []
    for i in range(20):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(255 - images[20]).save(tmp_path / "inverted.png")

    result = mnist_pipeline("predict", *files, "--json", "--top-k", "2", "--artifacts-dir", str(artifacts))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["model"] == {"version": "v0001", "production": True}
    expected = predict_probabilities(load_model(trained_mlp.model_path), images[:21]).argmax(1)
    assert [p["file"] for p in output["predictions"]] == files
    assert [p["top"][0]["class"] for p in output["predictions"]] == expected[:20].tolist()
    assert all(len(p["top"]) == 2 for p in output["predictions"])

    result = mnist_pipeline("predict", "--invert", str(tmp_path / "inverted.png"), "--version", "1",
                            "--artifacts-dir", str(artifacts))
    assert result.returncode == 0, result.stderr
    header, line = result.stdout.splitlines()
    assert header == "model v0001 (production)"
    assert line.split()[1] == str(expected[20])


def test_predict_garbage_file_fails_clearly(artifacts, tmp_path):
    garbage = tmp_path / "photo.jpg"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    result = mnist_pipeline("predict", str(garbage), "--artifacts-dir", str(artifacts))
    assert result.returncode == 1
    assert f"{garbage}: not an image, .npy array or IDX file" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_predict_without_a_production_model_fails_clearly(tmp_path, split_files):
    Image.fromarray(split_files.load("test")[0][0]).save(tmp_path / "digit.png")
    result = mnist_pipeline("predict", str(tmp_path / "digit.png"), "--artifacts-dir", str(tmp_path / "empty"))
    assert result.returncode == 1 and "No production model yet" in result.stderr


def test_registry_list(artifacts):
    result = mnist_pipeline("registry", "list", "--artifacts-dir", str(artifacts))
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[0] == "version"
    assert row.split()[0] == "v0001" and row.endswith("promoted  <- production")


def test_registry_list_of_an_empty_registry(tmp_path):
    result = mnist_pipeline("registry", "list", "--artifacts-dir", str(tmp_path))
    assert result.returncode == 0 and "No versions" in result.stdout


def test_predict_piped_into_head_stops_quietly(artifacts):
    idx = PROJECT_ROOT / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"  # 10,000 lines of output
    result = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{ENTRY_POINT}" predict "{idx}" --artifacts-dir "{artifacts}" | head -2'],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "model v0001 (production)" and len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
