"""The command line: help without heavy imports, parameters checked before any work."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT
from flows.parameters import PipelineParameters

FLOW_SCRIPT = PROJECT_ROOT / "flows" / "mnist_flow.py"


def test_help_lists_every_parameter_with_its_default_without_loading_prefect_or_tensorflow():
    result = subprocess.run([sys.executable, "-X", "importtime", str(FLOW_SCRIPT), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    for name, field in PipelineParameters.model_fields.items():
        assert "--" + name.replace("_", "-") in result.stdout
        if field.default is not None:
            assert f"(default: {field.default})" in " ".join(result.stdout.split())
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "prefect" not in imported and "tensorflow" not in imported and "keras" not in imported


@pytest.mark.parametrize(
    "args, named",
    [
        (["--threshold", "0"], "threshold"),
        (["--threshold", "1.01"], "threshold"),
        (["--epochs", "0"], "epochs"),
        (["--validation-fraction", "0.6"], "validation_fraction"),
        (["--validation-fraction", "0"], "validation_fraction"),
        (["--preset", "resnet"], "preset"),
        (["--learning-rate", "-1"], "learning_rate"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_parameter_fails_at_once_naming_it(args, named, tmp_path):
    artifacts = tmp_path / "artifacts"
    result = subprocess.run([sys.executable, str(FLOW_SCRIPT), *args, "--artifacts-dir", str(artifacts)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert named.replace("_", "-") in result.stderr or named in result.stderr
    assert not artifacts.exists(), "no work may start"


def test_flow_signature_mirrors_the_parameter_model():
    from flows.mnist_flow import mnist_pipeline

    signature = inspect.signature(mnist_pipeline.fn)
    assert list(signature.parameters) == list(PipelineParameters.model_fields)
    for name, field in PipelineParameters.model_fields.items():
        assert signature.parameters[name].default == field.default, name


def test_flow_rejects_bad_parameters_before_any_work(prefect_server, tmp_path):
    from flows.mnist_flow import mnist_pipeline
    from flows.parameters import InvalidParameterError

    state = mnist_pipeline(threshold=1.5, artifacts_dir=str(tmp_path / "a"), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidParameterError) and "threshold=1.5" in str(error)
    assert not (tmp_path / "a").exists()


def test_loading_the_flow_module_imports_no_tensorflow():
    """`prefect deploy` and workers import the flow file: it must stay light."""
    code = "import sys, flows.mnist_flow; print(sorted(m for m in ('tensorflow', 'keras', 'tensorflow_datasets') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
