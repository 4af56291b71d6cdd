"""The `mnist-pipeline` command as a user runs it, on real MNIST: `predict` with the real model, and the
exit codes of real `run`s and `sweep`s (seed-mlp, one epoch) against the session's Prefect server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_pipeline.cli.options import EXIT_NOT_PROMOTED, EXIT_OK
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

    result = run_cli(
        "predict", "--invert", str(tmp_path / "inverted.png"), "--version", "1", "--artifacts-dir", str(mlp_artifacts)
    )
    assert result.returncode == 0, result.stderr
    header, line = result.stdout.splitlines()
    assert header == "model v0001 (production)"
    assert line.split()[1] == str(expected[20])


def test_predict_piped_into_head_stops_quietly(mlp_artifacts):
    idx = bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz"  # 10,000 lines of output
    result = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "{ENTRY_POINT}" predict "{idx}" --artifacts-dir "{mlp_artifacts}" | head -2'],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "model v0001 (production)" and len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


@pytest.fixture
def artifacts(split_manifest, tmp_path) -> Path:
    """An empty artifacts folder but for the session's split (the default recipe), so nothing splits again."""
    folder = tmp_path / "artifacts"
    shutil.copytree(split_manifest.parent, folder / "splits" / split_manifest.parent.name)
    return folder


def flow_command(artifacts: Path, prefect_api_url: str, *args: str) -> tuple[int, dict, str]:
    """(exit code, summary JSON, stdout) of `mnist-pipeline ARGS --fail-if-not-promoted` on `artifacts`."""
    summary_file = artifacts.parent / "summary.json"
    summary_file.unlink(missing_ok=True)
    result = run_cli(
        *args,
        "--fail-if-not-promoted",
        "--artifacts-dir",
        str(artifacts),
        "--summary-json",
        str(summary_file),
        env={"PREFECT_API_URL": prefect_api_url},
        timeout=1800,
    )
    assert result.returncode in (EXIT_OK, EXIT_NOT_PROMOTED), result.stderr[-3000:]
    for notice in ("failed call to cuInit", "oneDNN custom operations", "absl::InitializeLog"):
        assert notice not in result.stderr  # TensorFlow's start-up notices are kept out
    return result.returncode, json.loads(summary_file.read_text()), result.stdout


def test_run_exits_0_while_its_model_is_production_and_3_when_rejected(artifacts, prefect_api_url):
    run = ("run", "--preset", "seed-mlp", "--epochs", "1", "--per-class-floor", "0")
    code, summary, out = flow_command(artifacts, prefect_api_url, *run, "--threshold", "0.5")
    assert (code, summary["verdict"], summary["production"]) == (EXIT_OK, "promoted", "v0001"), out
    code, summary, out = flow_command(artifacts, prefect_api_url, *run, "--threshold", "0.5")  # the same model
    assert (code, summary["verdict"], summary["version"]) == (EXIT_OK, "unchanged", "v0001"), out
    code, summary, out = flow_command(artifacts, prefect_api_url, *run, "--seed", "8", "--threshold", "0.999")
    assert (code, summary["verdict"], summary["production"]) == (EXIT_NOT_PROMOTED, "rejected", "v0001"), out
    assert "promoted      : no: test accuracy" in out and "below the threshold 0.9990" in out
    assert "production    : v0001" in out and "95% CI" in out


def test_sweep_exits_3_when_rejected_and_when_unchanged_from_a_rejected_version(artifacts, prefect_api_url):
    sweep = ["sweep", "--preset", "seed-mlp", "--epochs", "1", "--max-parallel", "1", "--threshold", "0.999"]
    sweep += ["--learning-rate", "0.001", "0.0005"]
    code, summary, out = flow_command(artifacts, prefect_api_url, *sweep)
    assert (code, summary["run"]["verdict"], summary["run"]["production"]) == (EXIT_NOT_PROMOTED, "rejected", None)
    assert "MNIST sweep finished: 2 candidates" in out
    code, summary, out = flow_command(artifacts, prefect_api_url, *sweep)  # the same trainings, from the cache
    assert (code, summary["run"]["verdict"], summary["run"]["version"]) == (EXIT_NOT_PROMOTED, "unchanged", "v0001")
