"""Sweeps without training: the grid and its sample, every bad input refused before anything trains,
selection on validation accuracy, and the report (fast tier; real sweeps are in test_sweep_mnist.py)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mnist_pipeline.core.modelling.models import PRESETS
from mnist_pipeline.core.modelling.parameters import InvalidParameterError, validate_parameters
from mnist_pipeline.core.modelling.training import TrainedModel
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.runs.sweep import (
    MAX_CANDIDATES,
    SweepFailedError,
    SweepParameters,
    SweepSummary,
    Trial,
    candidate_configs,
    candidates_table,
    render_sweep_report,
    select,
)
from support.commands import run_cli
from support.polling import wait_until
from support.servers import free_port, stop_process


def sweep(**values):
    return validate_parameters(values, SweepParameters)


# The grid --------------------------------------------------------------------------------------------


def test_grid_is_every_combination_with_the_preset_filling_what_is_not_swept():
    configs = candidate_configs(
        sweep(preset="mlp", learning_rate=[1e-3, 4e-3], batch_size=[128, 256, 512], patience=1, seed=7)
    )
    assert [(c.learning_rate, c.batch_size) for c in configs] == [
        (1e-3, 128),
        (1e-3, 256),
        (1e-3, 512),
        (4e-3, 128),
        (4e-3, 256),
        (4e-3, 512),
    ]
    assert {(c.preset, c.epochs, c.patience, c.seed) for c in configs} == {
        ("mlp", PRESETS["mlp"].defaults.epochs, 1, 7)
    }


def test_width_and_dropout_are_swept_where_the_preset_has_them():
    configs = candidate_configs(sweep(preset="mlp", width=[128, 256], dropout=[0.1, 0.3]))
    assert [(c.width, c.dropout) for c in configs] == [(128, 0.1), (128, 0.3), (256, 0.1), (256, 0.3)]
    configs = candidate_configs(sweep(preset="seed-mlp", width=[32, 64]))
    assert [(c.width, c.dropout) for c in configs] == [(32, None), (64, None)]


def test_random_sample_is_seeded_distinct_and_in_grid_order():
    params = dict(preset="seed-mlp", learning_rate=[1e-4, 1e-3, 1e-2], batch_size=[50, 100, 200], epochs=[1, 2])
    grid = candidate_configs(sweep(**params))
    first = candidate_configs(sweep(**params, samples=5, sample_seed=3))
    assert first == candidate_configs(sweep(**params, samples=5, sample_seed=3))
    assert len(set(first)) == 5 and set(first) <= set(grid)
    assert first == sorted(first, key=grid.index)
    others = {tuple(candidate_configs(sweep(**params, samples=5, sample_seed=seed))) for seed in range(10)}
    assert len(others) > 1, "the sample seed changes which combinations are drawn"


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(preset="mlp"), "nothing to compare, the grid has one combination"),
        (dict(preset="mlp", learning_rate=[1e-3]), "nothing to compare"),
        (dict(learning_rate=[1e-3, 2e-3, 1e-3]), "learning_rate lists 0.001 more than once"),
        (dict(learning_rate=[1e-3, 2e-3], samples=3), "samples=3 but the grid has only 2 combinations"),
        (
            dict(learning_rate=[i / 1000 for i in range(1, 14)], batch_size=[32, 64, 128, 256, 512]),
            f"the grid has 65 combinations (13 learning_rate x 5 batch_size), more than {MAX_CANDIDATES}",
        ),
        (dict(preset="seed-mlp", dropout=[0.1, 0.2]), "seed-mlp has no dropout layer"),
        (
            dict(learning_rate=[1e-3, 2e-3], max_parallel=2, dask_address="tcp://127.0.0.1:8786"),
            "give one or the other",
        ),
    ],
)
def test_contradictory_or_empty_grid_is_refused(values, message):
    with pytest.raises(InvalidParameterError, match="Invalid sweep") as error:
        candidate_configs(sweep(**values))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            dict(learning_rate=[1e-3, 2.0]),
            "learning_rate.1=2.0: Input should be less than or equal to 1 (allowed: > 0 and <= 1)",
        ),
        (
            dict(batch_size=[0, 64]),
            "batch_size.0=0: Input should be greater than or equal to 1 (allowed: >= 1 and <= 54000)",
        ),
        (dict(epochs=[1, 1001]), "epochs.1=1001"),
        (dict(samples=0), "samples=0"),
        (dict(dask_address="localhost:8786"), "dask_address='localhost:8786'"),
        (dict(preset="resnet"), "preset='resnet'"),
    ],
)
def test_value_outside_its_range_is_named_with_what_it_allows(values, message):
    with pytest.raises(InvalidParameterError) as error:
        sweep(**values)
    assert message in str(error.value)


def test_swept_parameters_keep_the_single_runs_bounds_in_the_flows_schema():
    from prefect.utilities.callables import parameter_schema

    from mnist_pipeline.flows.sweep_flow import mnist_sweep

    schema = parameter_schema(mnist_sweep.fn).model_dump()
    properties = schema["properties"]
    rate = properties["learning_rate"]
    assert rate["type"] == "array" and rate["items"]["exclusiveMinimum"] == 0 and rate["items"]["maximum"] == 1
    assert properties["batch_size"]["items"]["maximum"] == 54000
    assert properties["preset"]["enum"] == list(PRESETS)
    assert "Adam learning rate" in rate["description"]
    assert set(properties) == set(SweepParameters.model_fields)


# Selection -------------------------------------------------------------------------------------------


def trial(tmp_path: Path, name: str, val_accuracy: list[float] | None, best_epoch: int = 1, seconds: float = 10.0):
    """A finished candidate whose history has these per-epoch validation accuracies (None: it failed)."""
    config = PRESETS["mlp"].defaults
    run_dir = tmp_path / name
    if val_accuracy is None:
        return Trial(name, config, str(run_dir), error="boom")
    run_dir.mkdir()
    history = run_dir / "history.json"
    history.write_text(json.dumps({"val_accuracy": val_accuracy, "val_loss": [0.1] * len(val_accuracy)}))
    trained = TrainedModel(str(run_dir / "model.keras"), str(history), config, len(val_accuracy), best_epoch, seconds)
    return Trial(name, config, str(run_dir), trained=trained)


def test_selection_takes_the_kept_epochs_validation_accuracy(tmp_path):
    # c01's last epoch scores higher, but training kept its epoch 1 (best validation loss)
    trials = [
        trial(tmp_path, "c01", [0.95, 0.99], best_epoch=1),
        trial(tmp_path, "c02", [0.97, 0.96], best_epoch=1),
        trial(tmp_path, "c03", None),
    ]
    assert [t.validation_accuracy for t in trials] == [0.95, 0.97, None]
    assert select(trials).name == "c02"


def test_a_tie_goes_to_the_shortest_training(tmp_path):
    trials = [
        trial(tmp_path, "c01", [0.97], seconds=12.0),
        trial(tmp_path, "c02", [0.97], seconds=9.5),
        trial(tmp_path, "c03", [0.96], seconds=1.0),
    ]
    assert select(trials).name == "c02"


def test_no_completed_candidate_is_an_error_naming_each_failure(tmp_path):
    with pytest.raises(SweepFailedError, match="c01: boom; c02: boom"):
        select([trial(tmp_path, "c01", None), trial(tmp_path, "c02", None)])


# The report ------------------------------------------------------------------------------------------


def test_report_lists_every_candidate_marks_the_selected_and_shows_the_plot_inline(tmp_path):
    from mnist_pipeline.core.evaluation.plots import plot_sweep, png_data_uri

    trials = [trial(tmp_path, "c01", [0.951]), trial(tmp_path, "c02", None), trial(tmp_path, "c03", [0.962])]
    records = [t.record() for t in trials]
    run = RunSummary(
        "v0001",
        "mlp",
        0.96,
        (0.95, 0.97),
        False,
        "below the threshold",
        None,
        1,
        10.0,
        "/v/v0001",
        trials[2].run_dir,
        "/v/decisions.jsonl",
        verdict="rejected",
    )
    summary = SweepSummary(records, "c03", run, str(tmp_path / "sweep"))
    plot = tmp_path / "validation_accuracy.png"
    plot_sweep(records, "c03", plot)
    report = render_sweep_report(summary, png_data_uri(plot))

    rows = [line for line in report.splitlines() if line.startswith("| c0")]
    assert [row.split("|")[1].strip() for row in rows] == ["c01", "c02", "c03 (selected)"]
    assert "| 0.9510 |" in rows[0] and rows[1].rstrip().endswith("| failed |") and "| 0.9620 |" in rows[2]
    assert "Failed: c02." in report and "**rejected**" in report
    [uri] = [line[line.index("(") + 1 : -1] for line in report.splitlines() if line.startswith("![")]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == plot.read_bytes() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert candidates_table(records, "c03") in report


def test_failed_candidate_record_keeps_its_error(tmp_path):
    record = replace(trial(tmp_path, "c01", None), error="PermanentError: no memory").record()
    assert record["status"] == "failed" and record["validation_accuracy"] is None
    assert record["error"] == "PermanentError: no memory"


# The command line: bad input answers before anything trains -----------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "mlp", "--epochs", "1"], "nothing to compare"),
        (["--learning-rate", "0.1", "2"], "learning_rate.1=2.0"),
        (["--batch-size", "64", "64"], "batch_size lists 64 more than once"),
        (["--learning-rate", "0.1", "0.2", "--samples", "3"], "samples=3 but the grid has only 2"),
        (["--learning-rate", "0.1", "0.2", "--dask-address", "localhost:8786"], "dask_address='localhost:8786'"),
        (["--learning-rate"], "expected at least one argument"),
    ],
)
def test_bad_sweep_arguments_exit_2_naming_the_problem(args, message, tmp_path):
    result = run_cli("sweep", *args, "--artifacts-dir", str(tmp_path / "artifacts"), timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr.splitlines()[-1]
    assert not (tmp_path / "artifacts").exists()


def sweep_on(address: str, tmp_path):
    """A two-candidate sweep of the tutorial's model sent to the Dask scheduler at `address`."""
    args = ["--preset", "seed-mlp", "--learning-rate", "0.001", "0.002", "--dask-address", address]
    return run_cli("sweep", *args, "--artifacts-dir", str(tmp_path / "artifacts"), timeout=300)


def test_unreachable_dask_scheduler_exits_1_before_any_work(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    result = sweep_on(address, tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: Cannot reach the Dask scheduler at {address}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "artifacts").exists()


def test_dask_scheduler_without_workers_exits_1_before_any_work(tmp_path):
    def answers(port: int) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    port = free_port()
    with open(tmp_path / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=os.environ,
            start_new_session=True,
        )
    try:
        wait_until(lambda: answers(port), bool, timeout=120)
        result = sweep_on(f"tcp://127.0.0.1:{port}", tmp_path)
    finally:
        stop_process(scheduler)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: The Dask scheduler at tcp://127.0.0.1:{port} has no workers"
    )
    assert not (tmp_path / "artifacts").exists()
