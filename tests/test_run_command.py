"""Running the pipeline as a user does: `mnist-pipeline run`, the default run by `scripts/run.sh`, and
what the flow says when its input is bad before any work starts.

Child processes use the session's Prefect server (PREFECT_API_URL), as after `prefect server start`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.support.errors import PipelineError
from support.commands import PROJECT_ROOT, run_cli
from support.data import bundle_copy, flip_byte

pytestmark = pytest.mark.slow


def test_flow_rejects_bad_parameters_before_any_work(prefect_server, tmp_path):
    """Called directly (or by a deployment), the flow's signature carries each parameter's limits, so
    Prefect itself refuses the call, naming the parameter and its limit."""
    from prefect.exceptions import ParameterTypeError

    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    state = mnist_pipeline(threshold=1.5, epochs=0, artifacts_dir=str(tmp_path / "a"), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ParameterTypeError), repr(error)
    assert "threshold: Input should be less than or equal to 1" in str(error)
    assert "epochs: Input should be greater than or equal to 1" in str(error)
    assert not (tmp_path / "a").exists()


def test_unwritable_artifacts_dir_is_reported_before_any_work(prefect_server, tmp_path):
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    state = mnist_pipeline(preset="mlp", artifacts_dir=str(blocker / "artifacts"), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, PipelineError) and "not writable" in str(error) and "--artifacts-dir" in str(error)
    assert str(blocker / "artifacts") in str(error)
    assert blocker.read_text() == "not a directory"


def test_run_exits_1_with_one_error_line_and_no_traceback_on_a_damaged_bundle(prefect_api_url, tmp_path):
    bundle = bundle_copy(tmp_path / "bundle")
    labels = bundle / "t10k-labels-idx1-ubyte.gz"
    flip_byte(labels, -10)
    artifacts = tmp_path / "artifacts"
    result = run_cli(
        "run",
        "--preset",
        "seed-mlp",
        "--epochs",
        "1",
        "--bundle-dir",
        str(bundle),
        "--artifacts-dir",
        str(artifacts),
        env={"PREFECT_API_URL": prefect_api_url},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: MNIST bundle file {labels} has SHA-256 "), line
    assert "Restore it from the project" in line
    assert "Traceback" not in result.stderr + result.stdout
    assert "MNIST pipeline finished" not in result.stdout
    assert not (artifacts / "registry").exists()


def test_an_explicit_artifacts_dir_wins_over_MNIST_ARTIFACTS_DIR(prefect_api_url, tmp_path):
    """Checked without training: an unwritable --artifacts-dir fails even though the environment names
    a good folder, and nothing goes to the environment's folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    from_env = tmp_path / "from-env"
    result = run_cli(
        "run",
        "--artifacts-dir",
        str(blocker / "artifacts"),
        env={"MNIST_ARTIFACTS_DIR": str(from_env), "PREFECT_API_URL": prefect_api_url},
    )
    assert result.returncode == 1, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: Artifacts directory {blocker / 'artifacts'} is not writable"), line
    assert "Traceback" not in result.stderr
    assert not from_env.exists()


def test_scripts_run_sh_sets_up_and_runs_the_default_pipeline_into_MNIST_ARTIFACTS_DIR(
    prefect_api_url, split_manifest, tmp_path
):
    """The promise of README's quick start, `bash scripts/run.sh`: the default preset (the cnn) trained,
    tested and promoted. One of its nine epochs (already above 98%), to keep CI short: what the full
    default reaches is bench/time_to_accuracy.py's to measure. The artifacts folder comes from the environment; its
    split is the session's (the same recipe as the default), so only the cnn trains."""
    artifacts, cwd = tmp_path / "from-env", tmp_path / "cwd"
    shutil.copytree(split_manifest.parent, artifacts / "splits" / split_manifest.parent.name)
    cwd.mkdir()
    summary_file = tmp_path / "summary.json"
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "run.sh"), "--epochs", "1", "--summary-json", str(summary_file)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "MNIST_ARTIFACTS_DIR": str(artifacts), "PREFECT_API_URL": prefect_api_url},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = RunSummary.from_json(summary_file.read_text())
    assert summary.preset == "cnn"
    assert summary.accuracy >= 0.98, summary
    assert summary.promoted and summary.version == "v0001" == summary.production
    assert "MNIST pipeline finished: model v0001 (cnn)" in result.stdout
    assert open_registry(artifacts / "registry").production() == "v0001"
    assert Path(summary.version_dir).parent == artifacts / "registry" / "versions"
    assert Path(summary.run_dir).parent == artifacts / "runs"
    assert not (cwd / "artifacts").exists(), "wrote to ./artifacts despite MNIST_ARTIFACTS_DIR"
    assert [path.name for path in (artifacts / "splits").iterdir() if not path.name.startswith(".")] == [
        split_manifest.parent.name
    ]  # the default recipe: the session's split, not a new one
