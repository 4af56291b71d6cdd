"""The command line of `run`: help without heavy imports, parameters checked before any work.

Fast tier: nothing here trains, reads MNIST or needs a Prefect server (runs of the command that do
are in test_run_command.py).
"""

from __future__ import annotations

import inspect

import pytest

from support.commands import ENTRY_POINT, FLOW_SCRIPT, imported_packages, run_cli, run_flow_script
from mnist_pipeline.core.modelling.parameters import PipelineParameters

HEAVY = {"prefect", "tensorflow", "keras", "tensorflow_datasets"}


@pytest.mark.parametrize("command", [(str(FLOW_SCRIPT),), (str(ENTRY_POINT), "run")], ids=["flow-script", "entry-point"])
def test_help_lists_every_parameter_with_its_default_without_loading_prefect_or_tensorflow(command):
    if command[0] == str(FLOW_SCRIPT):
        result = run_flow_script("--help")
    else:
        result = run_cli("run", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for name, field in PipelineParameters.model_fields.items():
        assert "--" + name.replace("_", "-") in text, name
        if field.default is not None:
            assert f"(default: {field.default})" in text, name
    assert imported_packages(*command, "--help") & HEAVY == set()


def error_line(stderr: str) -> str:
    """argparse's own message: the last line of stderr, after the usage lines (which list every option)."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("mnist-pipeline run: error: "), stderr
    return lines[-1]


@pytest.mark.parametrize(
    "args, names_it",
    [
        (["--threshold", "0"], "threshold=0.0"),
        (["--threshold", "1.01"], "threshold=1.01"),
        (["--epochs", "0"], "epochs=0"),
        (["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
        (["--validation-fraction", "0.6"], "validation_fraction=0.6"),
        (["--validation-fraction", "0"], "validation_fraction=0.0"),
        (["--preset", "resnet"], "argument --preset: invalid choice: 'resnet'"),
        (["--learning-rate", "-1"], "learning_rate=-1.0"),
        (["--batch-size", "0"], "batch_size=0"),
        (["--seed", "-1"], "seed=-1"),
    ],
)
def test_bad_parameter_fails_at_once_naming_it(args, names_it, tmp_path):
    artifacts = tmp_path / "artifacts"
    result = run_flow_script(*args, "--artifacts-dir", str(artifacts))
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert names_it in line, line
    others = {name for name in PipelineParameters.model_fields if f" {name}=" in line or f"--{name.replace('_', '-')}:" in line}
    assert len(others) == 1, f"names {others}, not just the bad parameter: {line}"
    assert not artifacts.exists(), "no work may start"


def test_bad_parameter_of_the_entry_point_exits_2_naming_it(tmp_path):
    result = run_cli("run", "--threshold", "1.5", "--artifacts-dir", str(tmp_path / "artifacts"))
    assert result.returncode == 2, result.stderr
    assert "threshold=1.5" in error_line(result.stderr)
    assert not (tmp_path / "artifacts").exists()


def test_flow_signature_mirrors_the_parameter_model():
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    signature = inspect.signature(mnist_pipeline.fn)
    assert list(signature.parameters) == list(PipelineParameters.model_fields)
    for name, field in PipelineParameters.model_fields.items():
        assert signature.parameters[name].default == field.default, name
        assert signature.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    schema = mnist_pipeline.parameters.model_dump()["properties"]  # what Prefect shows in the Run form
    assert list(schema) == list(PipelineParameters.model_fields)
    for name, field in PipelineParameters.model_fields.items():
        assert schema[name].get("description") == field.description, name
        assert schema[name].get("default") == field.default, name


def test_loading_the_flow_module_imports_no_tensorflow():
    """`prefect deploy` and workers import the flow file: it must stay light."""
    imported = imported_packages("-c", "import mnist_pipeline.flows.mnist_flow")
    assert "prefect" in imported  # the import did happen
    assert imported & {"tensorflow", "keras", "tensorflow_datasets"} == set()
