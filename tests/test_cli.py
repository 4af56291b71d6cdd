"""The `mnist-pipeline` command line: every command's options and help, switches, bad values refused
by name, what `--help` and the light commands load, and the exit codes of `run` and `sweep`.

Fast tier: the flows are replaced by stand-ins that register the tiny synthetic models for real (the
gate decides, Prefect does not run); real runs and sweeps of the command are in test_cli_mnist.py
and test_run_command.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.cli.main import build_parser, main
from mnist_pipeline.cli.options import EXIT_FAILED, EXIT_NOT_PROMOTED, EXIT_OK, EXIT_USAGE, described
from mnist_pipeline.core.modelling.parameters import PipelineParameters
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.runs.sweep import SweepParameters, SweepSummary, Trial
from mnist_pipeline.core.support.errors import PipelineError
from support.commands import ENTRY_POINT, FLOW_SCRIPT, PROJECT_ROOT, imported_modules, run_cli
from support.pictures import hand_made_zero, write_png
from support.training import copy_run, register

SWEEP_SCRIPT = PROJECT_ROOT / "flows" / "sweep_flow.py"
HEAVY = {"prefect", "tensorflow", "keras", "tensorflow_datasets", "PIL"}
COMMANDS = {
    "run",
    "sweep",
    "predict",
    "serve",
    "team up",
    *(
        f"registry {action}"
        for action in ("list", "show", "promote", "rollback", "check", "repair", "convert", "sync-mlflow")
    ),
    *(f"corrections {action}" for action in ("list", "accept", "reject", "relabel")),
}
# What a command needs besides options, to parse at all.
REQUIRED = {
    "predict": ["digit.png"],
    "registry show": ["1"],
    "registry promote": ["1", "--reason", "test"],
    "registry rollback": ["--reason", "test"],
    "corrections accept": ["5c0e"],
    "corrections reject": ["5c0e"],
    "corrections relabel": ["5c0e", "1"],
}


# The parser, read back: argparse has no public way to list sub-parsers and options (sphinx-argparse,
# which makes the CLI reference from `build_parser`, reads the same attributes).


def leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, argparse.ArgumentParser]:
    """{"registry promote": its parser, ...}: every command that runs something."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(leaf_parsers(sub, (*path, name)))
    return found or {" ".join(path): parser}


def options_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]


PARSERS = leaf_parsers(build_parser())
SWITCHES = [
    (command, action.option_strings[0][2:])
    for command, parser in PARSERS.items()
    for action in options_of(parser)
    if isinstance(action, argparse.BooleanOptionalAction)
]


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mnist-pipeline ARGS` run by `main` in this process."""
    try:
        code = main(list(args))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_command_is_there():
    assert set(PARSERS) == COMMANDS


# Help ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_each_command_lists_each_option_with_its_help(capsys, command):
    code, out, _ = in_process(capsys, *command.split(), "--help")
    assert code == EXIT_OK and out.startswith(f"usage: mnist-pipeline {command} ")
    text = " ".join(out.split())
    for action in options_of(PARSERS[command]):
        assert action.help and action.help != argparse.SUPPRESS, (command, action.dest)
        assert all(option in text for option in action.option_strings), (command, action.option_strings)
        start = " ".join(action.help.split("%")[0].split()[:4])  # before any %(default)s
        assert start in text, (command, action.dest, start)


def test_a_docstring_gives_a_command_its_help_line_and_its_description():
    doc = """A version, shown.

    Its metrics and
    its files.
    """
    assert described(doc) == ("a version, shown", "A version, shown. Its metrics and its files.")


def test_every_command_and_action_is_listed_with_a_help_and_described_in_its_own():
    def listed(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    yield " ".join((*path, choice.dest)), choice.help
                    yield from listed(action.choices[choice.dest], (*path, choice.dest))

    helps = dict(listed(build_parser()))
    assert set(helps) >= COMMANDS and all(helps.values()), helps
    assert all(help[0].islower() and not help.endswith(".") for help in helps.values()), helps
    assert all(len(PARSERS[command].description or "") > len(helps[command]) for command in COMMANDS)


@pytest.mark.parametrize("command, model", [("run", PipelineParameters), ("sweep", SweepParameters)])
def test_run_and_sweep_take_every_parameter_with_its_default(capsys, command, model):
    text = " ".join(in_process(capsys, command, "--help")[1].split())
    for name, field in model.model_fields.items():
        assert "--" + name.replace("_", "-") in text, name
        if field.annotation is bool:
            assert f"--{name.replace('_', '-')}, --no-{name.replace('_', '-')}" in text, name
            assert f"(default: {'on' if field.default else 'off'})" in text, name
        elif field.default not in (None, []):
            assert f"(default: {field.default})" in text, name


@pytest.mark.parametrize(
    "args",
    [
        ("-m", "mnist_pipeline.cli.main", "--help"),
        (str(FLOW_SCRIPT), "--help"),
        (str(SWEEP_SCRIPT), "--help"),
        ("-m", "mnist_pipeline.cli.main", "predict", "--help"),
        ("-m", "mnist_pipeline.cli.main", "registry", "promote", "--help"),
    ],
    ids=["main", "flow-script", "sweep-script", "predict", "registry"],
)
def test_help_loads_neither_prefect_nor_tensorflow_nor_a_stage(args):
    imported = imported_modules(*args)
    assert "mnist_pipeline.cli.options" in imported  # the command line really was loaded
    assert not {name.split(".")[0] for name in imported} & HEAVY
    assert not (loaded := stages_and_flows(imported)), sorted(loaded)[:5]


def test_help_of_the_installed_command_lists_every_command():
    """(That it answers at once is what loading nothing heavy, tested above, is about: a timed test
    here failed on a busy machine.)"""
    result = run_cli("--help")
    assert result.returncode == EXIT_OK and all(command.split()[0] in result.stdout for command in COMMANDS)


def stages_and_flows(modules: set[str]) -> set[str]:
    """The modules among `modules` that are Prefect, a stage or a flow (under either name)."""
    return {
        name
        for name in modules
        if name.split(".")[0] in ("prefect", "tasks", "flows")
        or name.startswith(("mnist_pipeline.tasks", "mnist_pipeline.flows"))
    }


def test_entry_point_is_installed():
    assert ENTRY_POINT.is_file(), "run `pip install -e .` to install the mnist-pipeline command"


STUCK_EXIT = """
import subprocess, sys, threading
from mnist_pipeline.cli import main as cli
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
threading._register_atexit(threading.Event().wait)  # never ends, as a Prefect service's drain whose loop died
cli.EXIT_DEADLINE_SECONDS = 1
cli.main = lambda argv=None: 3  # the command's work, done: its exit code
cli.entry_point()
"""


def test_a_clean_up_stuck_at_exit_is_given_up_after_the_deadline_and_the_processes_started_are_stopped():
    result = subprocess.run([sys.executable, "-c", STUCK_EXIT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr[-3000:]  # the command's own exit code
    assert "warning: the command is done (exit code 3), but its clean-up at exit" in result.stderr
    assert "did not end within 1 s; stopping it and the processes it started" in result.stderr
    assert "Thread 0x" in result.stderr  # where each thread was (faulthandler's dump)
    child = int(result.stdout.split()[0])
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text(), (
        "the process the command started outlived it"
    )


# Switches --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_boolean_option_is_a_switch(command):
    for action in options_of(PARSERS[command]):
        if action.nargs == 0:  # takes no value: on or off
            assert isinstance(action, argparse.BooleanOptionalAction), (command, action.option_strings)


@pytest.mark.parametrize("command, name", SWITCHES, ids=[f"{c}--{n}" for c, n in SWITCHES])
def test_switch_turns_on_and_off(command, name):
    parser = build_parser()
    base = [*command.split(), *REQUIRED.get(command, [])]
    dest = next(a.dest for a in options_of(PARSERS[command]) if a.option_strings[:1] == [f"--{name}"])
    assert getattr(parser.parse_args([*base, f"--{name}"]), dest) is True
    assert getattr(parser.parse_args([*base, f"--no-{name}"]), dest) is False
    assert getattr(parser.parse_args(base), dest) in (False, None)  # None: a gate setting left to the version's


def test_the_issues_switches_exist():
    """The switches issue 19 found taking a value (`sweep --force-retrain FORCE_RETRAIN`) or missing."""
    assert {
        ("sweep", "force-retrain"),
        ("sweep", "require-significant"),
        ("sweep", "fail-if-not-promoted"),
        ("run", "fail-if-not-promoted"),
        ("registry promote", "require-significant"),
        ("predict", "json"),
        ("serve", "access-log"),
    } <= set(SWITCHES)


# Bad values: exit 2 at once, naming the option and what it allows ------------------------------------


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("run", ["--threshold", "0"], "threshold=0.0: Input should be greater than 0"),
        ("run", ["--threshold", "1.01"], "threshold=1.01"),
        ("run", ["--epochs", "0"], "epochs=0"),
        ("run", ["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
        ("run", ["--validation-fraction", "0.6"], "validation_fraction=0.6"),
        ("run", ["--preset", "resnet"], "argument --preset: invalid choice: 'resnet'"),
        ("run", ["--learning-rate", "-1"], "learning_rate=-1.0"),
        ("run", ["--batch-size", "0"], "batch_size=0"),
        ("run", ["--seed", "-1"], "seed=-1"),
        ("run", ["--preset", "seed-mlp", "--dropout", "0.2"], "dropout=0.2"),
        ("sweep", ["--learning-rate", "0.1", "2"], "learning_rate.1=2.0"),
        ("sweep", ["--learning-rate", "0.1", "0.2", "--samples", "0"], "samples=0"),
        ("sweep", ["--learning-rate", "0.1", "0.2", "--max-parallel", "two"], "argument --max-parallel: invalid int"),
        ("predict", ["digit.png", "--top-k", "11"], "argument --top-k: 11 is not a whole number from 1 to 10"),
        ("predict", ["digit.png", "--top-k", "two"], "argument --top-k: 'two' is not a whole number from 1 to 10"),
        ("predict", ["digit.png", "--version", "latest"], "argument --version: "),
        ("registry show", ["first"], "argument N: "),
        (
            "registry promote",
            ["1", "--reason", "r", "--threshold", "2"],
            "argument --threshold: Invalid parameter threshold=",
        ),
        ("registry promote", ["1", "--reason", "r", "--per-class-floor", "x"], "argument --per-class-floor: "),
        ("serve", ["--port", "70000"], "argument --port: 70000 is not a whole number from 1 to 65535"),
        ("serve", ["--max-batch", "1.5"], "argument --max-batch: '1.5' is not a whole number from 1 to 4096"),
        ("serve", ["--poll-seconds", "0"], "argument --poll-seconds: 0 is not a number from 0.05 to 3600"),
        ("serve", ["--batch-window-ms", "nan"], "argument --batch-window-ms: nan is not a number from 0 to 10000"),
        ("team up", ["--trainings", "0"], "argument --trainings: 0 is not a whole number of at least 1"),
        ("team up", ["--worker-limit", "many"], "argument --worker-limit: 'many' is not a whole number of at least 1"),
    ],
)
def test_bad_value_exits_2_naming_the_option(capsys, tmp_path, command, args, message):
    where = ["--artifacts-dir", str(tmp_path / "artifacts")] if command in ("run", "sweep") else []
    code, out, err = in_process(capsys, *command.split(), *args, *where)
    assert code == EXIT_USAGE and out == ""
    last = err.strip().splitlines()[-1]  # argparse's message, after the usage lines (which list every option)
    assert last.startswith(f"mnist-pipeline {command}: error: ") and message in last, last
    if command == "run":  # names the bad parameter and no other
        named = {
            name
            for name in PipelineParameters.model_fields
            if f" {name}=" in last or f"--{name.replace('_', '-')}:" in last
        }
        assert len(named) == 1, f"names {named}, not just the bad parameter: {last}"
    assert not (tmp_path / "artifacts").exists(), "no work may start"


@pytest.mark.parametrize(
    "script, command, args",
    [(FLOW_SCRIPT, "run", ["--threshold", "1.5"]), (SWEEP_SCRIPT, "sweep", ["--learning-rate", "0.1"])],
    ids=["run", "sweep"],
)
def test_flow_scripts_refuse_bad_parameters_with_exit_2(tmp_path, script, command, args):
    result = subprocess.run(
        [sys.executable, str(script), *args, "--artifacts-dir", str(tmp_path / "artifacts")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"mnist-pipeline {command}: error: ")
    assert not (tmp_path / "artifacts").exists()


# Exit codes of run and sweep --------------------------------------------------------------------------
# The flows are stand-ins: each registers one of the tiny synthetic models in a copy of `two_versions`
# (v0001 production, v0002 rejected) for real, and returns what the flow would.

OUTCOMES = {  # outcome: (model, copied as a new version?, verdict)
    "promoted": ("strong", True, "promoted"),  # as good as production v0001: not worse, so promoted
    "rejected": ("weak", True, "rejected"),
    "unchanged-production": ("strong", False, "unchanged"),  # identical to v0001, production
    "unchanged-rejected": ("weak", False, "unchanged"),  # identical to v0002, rejected
}


@pytest.fixture
def stand_in_flows(monkeypatch, tiny_strong, tiny_weak, synthetic_split, tmp_path):
    """set(outcome): the next `run` or `sweep` ends with that outcome ("failed": a PipelineError)."""
    from mnist_pipeline.cli import run as run_command
    from mnist_pipeline.flows import mnist_flow, sweep_flow

    chosen: dict[str, str] = {}

    def run_flow(**params) -> RunSummary:
        if chosen["outcome"] == "failed":
            raise PipelineError("MNIST bundle file x.gz is damaged: restore it")
        model, copied, _ = OUTCOMES[chosen["outcome"]]
        run = {"strong": tiny_strong, "weak": tiny_weak}[model]
        if copied:
            run = copy_run(run, tmp_path / "copied-run")
        registry_dir = Path(params["artifacts_dir"]) / "registry"
        decision = register(open_registry(registry_dir), run, synthetic_split, flow_run_id="run-3")
        return mnist_flow.summarize(decision, run[0], run[1], str(registry_dir), str(tmp_path / "run"))

    def sweep_flow_stand_in(**params) -> SweepSummary:
        summary = run_flow(**params)
        trained = tiny_strong[0]
        candidate = Trial("c01", trained.config, str(tmp_path / "c01"), trained).record()
        return SweepSummary(candidates=[candidate], selected="c01", run=summary, sweep_dir=str(tmp_path / "sweep"))

    monkeypatch.setattr(mnist_flow, "mnist_pipeline", run_flow)
    monkeypatch.setattr(sweep_flow, "mnist_sweep", sweep_flow_stand_in)
    # TensorFlow is loaded already, by the tiny models
    monkeypatch.setattr(run_command, "import_tensorflow_in_background", lambda: None)
    return lambda outcome: chosen.update(outcome=outcome)


RUN_ARGS = {
    "run": ["run", "--preset", "seed-mlp"],
    "sweep": ["sweep", "--preset", "seed-mlp", "--learning-rate", "0.001", "0.002"],
}


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize(
    "outcome, switch, expected",
    [
        ("promoted", "--fail-if-not-promoted", EXIT_OK),
        ("rejected", "--fail-if-not-promoted", EXIT_NOT_PROMOTED),
        ("rejected", "--no-fail-if-not-promoted", EXIT_OK),
        ("rejected", None, EXIT_OK),
        ("unchanged-production", "--fail-if-not-promoted", EXIT_OK),
        ("unchanged-rejected", "--fail-if-not-promoted", EXIT_NOT_PROMOTED),
        ("unchanged-rejected", None, EXIT_OK),
    ],
)
def test_exit_code_says_whether_the_model_is_production(
    stand_in_flows, two_versions, capsys, tmp_path, command, outcome, switch, expected
):
    stand_in_flows(outcome)
    summary_file = tmp_path / "summary.json"
    code, out, err = in_process(
        capsys,
        *RUN_ARGS[command],
        *([switch] if switch else []),
        "--artifacts-dir",
        str(two_versions),
        "--summary-json",
        str(summary_file),
    )
    assert code == expected, (out, err)
    summary = json.loads(summary_file.read_text())
    summary = summary["run"] if command == "sweep" else summary
    assert summary["verdict"] == OUTCOMES[outcome][2], summary["reason"]
    assert "finished" in out and summary["version"] in out and err == ""


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_failure_prints_one_error_line_and_exits_1(stand_in_flows, two_versions, capsys, command):
    stand_in_flows("failed")
    code, out, err = in_process(
        capsys, *RUN_ARGS[command], "--fail-if-not-promoted", "--artifacts-dir", str(two_versions)
    )
    assert (code, out, err) == (EXIT_FAILED, "", "error: MNIST bundle file x.gz is damaged: restore it\n")


# predict and registry: light, and clear about bad input ------------------------------------------------

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
    result = subprocess.run(
        [sys.executable, "-c", PREDICT_AND_MANAGE, str(two_versions), str(picture)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *printed, last = result.stdout.splitlines()
    ran = json.loads(last)
    assert ran["codes"] == [0, 0, 0, 0, EXIT_NOT_PROMOTED, 0, 0, 0, 0], result.stdout  # the gate refuses v0002
    assert printed[0] == "model v0001 (production)" and printed[1].startswith(str(picture))
    # a model was really loaded: v0001's light model, on LiteRT, without TensorFlow
    assert "ai_edge_litert" in ran["modules"] and "tensorflow" not in ran["modules"]
    assert not (loaded := stages_and_flows(set(ran["modules"]))), sorted(loaded)[:5]


def test_predict_garbage_file_fails_clearly(two_versions, tmp_path):
    garbage = tmp_path / "photo.jpg"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    result = run_cli("predict", str(garbage), "--artifacts-dir", str(two_versions))
    assert result.returncode == EXIT_FAILED
    assert f"{garbage}: not an image, .npy array or IDX file" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_predict_without_a_production_model_fails_clearly(capsys, tmp_path):
    picture = write_png(tmp_path / "digit.png", hand_made_zero())
    code, out, err = in_process(capsys, "predict", str(picture), "--artifacts-dir", str(tmp_path / "empty"))
    assert code == EXIT_FAILED and out == "" and err.startswith("error: No production model yet")


def test_registry_list(two_versions, capsys):
    code, out, _ = in_process(capsys, "registry", "list", "--artifacts-dir", str(two_versions))
    assert code == EXIT_OK
    header, first, second = out.splitlines()
    assert header.split()[0] == "version"
    assert first.split()[0] == "v0001" and first.endswith("promoted  <- production")
    assert second.split()[0] == "v0002" and second.endswith("rejected")


def test_registry_list_of_an_empty_registry(capsys, tmp_path):
    code, out, _ = in_process(capsys, "registry", "list", "--artifacts-dir", str(tmp_path))
    assert code == EXIT_OK and "No versions" in out
