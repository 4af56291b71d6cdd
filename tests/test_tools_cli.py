"""The `mnist-pipeline` console entry point, run as a user runs it (a separate process) where what it
loads, prints and exits with matters, and through `main` for its options; on the tiny models of the
fast tier (real digits with the real model: test_tools_cli_mnist.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from support.commands import ENTRY_POINT, PROJECT_ROOT, imported_modules, run_cli
from support.pictures import hand_made_zero, write_png
from mnist_pipeline.cli.main import main
from mnist_pipeline.core.modelling.parameters import PipelineParameters

HEAVY = {"prefect", "tensorflow", "keras", "PIL"}


def stages_and_flows(modules: set[str]) -> set[str]:
    """The modules among `modules` that are Prefect, a stage or a flow (under either name)."""
    return {name for name in modules if name.split(".")[0] in ("prefect", "tasks", "flows")
            or name.startswith(("mnist_pipeline.tasks", "mnist_pipeline.flows"))}


def test_entry_point_is_installed():
    assert ENTRY_POINT.is_file(), "run `pip install -e .` to install the mnist-pipeline command"


def test_help_answers_at_once_without_loading_prefect_tensorflow_or_a_stage():
    started = time.perf_counter()
    result = run_cli("--help")
    assert time.perf_counter() - started < 2.0
    assert result.returncode == 0
    for command in ("run", "predict", "registry"):
        assert command in result.stdout

    imported = imported_modules("-m", "mnist_pipeline.cli.main", "--help")
    assert "mnist_pipeline.cli.run" in imported  # the command line really was loaded
    assert not {name.split(".")[0] for name in imported} & HEAVY
    assert not (loaded := stages_and_flows(imported)), sorted(loaded)[:5]


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mnist-pipeline ARGS` run by `main` in this process (the
    options and messages are the command's; the process is the test's)."""
    try:
        code = main(list(args))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [["run"], ["predict"], ["registry", "list"], ["registry", "show"],
                                     ["registry", "promote"], ["registry", "rollback"]])
def test_each_command_has_help(capsys, command):
    code, out, _ = in_process(capsys, *command, "--help")
    assert code == 0 and out.startswith(f"usage: mnist-pipeline {' '.join(command)}")


def test_run_takes_the_flows_parameters_and_checks_them_before_any_work(capsys, tmp_path):
    help_text = " ".join(in_process(capsys, "run", "--help")[1].split())
    for name in PipelineParameters.model_fields:
        assert "--" + name.replace("_", "-") in help_text
    assert "--fail-if-not-promoted" in help_text

    code, _, err = in_process(capsys, "run", "--threshold", "1.5", "--artifacts-dir", str(tmp_path / "artifacts"))
    assert code == 2 and "threshold" in err
    assert not (tmp_path / "artifacts").exists()


# What the predict and registry commands run, in one process; it prints their exit codes and the
# modules loaded by then.
PREDICT_AND_MANAGE = """
import json, sys
from mnist_pipeline.cli.main import main

artifacts, picture = sys.argv[1:]
where = ["--artifacts-dir", artifacts]
change = ["--who", "tests", "--reason", "import check", *where]
codes = [main(["predict", picture, *where]), main(["predict", picture, "--json", "--version", "2", *where]),
         main(["registry", "list", *where]), main(["registry", "show", "2", *where]),
         main(["registry", "promote", "2", *change]), main(["registry", "promote", "2", "--force", *change]),
         main(["registry", "rollback", *change]), main(["registry", "check", *where]),
         main(["registry", "repair", *where])]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def test_predict_and_registry_commands_load_neither_prefect_nor_a_stage(two_versions, tmp_path):
    picture = write_png(tmp_path / "digit.png", hand_made_zero())
    result = subprocess.run([sys.executable, "-c", PREDICT_AND_MANAGE, str(two_versions), str(picture)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    *printed, last = result.stdout.splitlines()
    ran = json.loads(last)
    assert ran["codes"] == [0, 0, 0, 0, 3, 0, 0, 0, 0], result.stdout  # 3: the gate refuses v0002
    assert printed[0] == "model v0001 (production)" and printed[1].startswith(str(picture))
    assert "tensorflow" in ran["modules"] and "keras" in ran["modules"]  # a model was really loaded
    assert not (loaded := stages_and_flows(set(ran["modules"]))), sorted(loaded)[:5]


def test_predict_garbage_file_fails_clearly(two_versions, tmp_path):
    garbage = tmp_path / "photo.jpg"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    result = run_cli("predict", str(garbage), "--artifacts-dir", str(two_versions))
    assert result.returncode == 1
    assert f"{garbage}: not an image, .npy array or IDX file" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_predict_without_a_production_model_fails_clearly(tmp_path):
    picture = write_png(tmp_path / "digit.png", hand_made_zero())
    result = run_cli("predict", str(picture), "--artifacts-dir", str(tmp_path / "empty"))
    assert result.returncode == 1 and "No production model yet" in result.stderr


def test_registry_list(two_versions):
    result = run_cli("registry", "list", "--artifacts-dir", str(two_versions))
    assert result.returncode == 0, result.stderr
    header, first, second = result.stdout.splitlines()
    assert header.split()[0] == "version"
    assert first.split()[0] == "v0001" and first.endswith("promoted  <- production")
    assert second.split()[0] == "v0002" and second.endswith("rejected")


def test_registry_list_of_an_empty_registry(tmp_path):
    result = run_cli("registry", "list", "--artifacts-dir", str(tmp_path))
    assert result.returncode == 0 and "No versions" in result.stdout
