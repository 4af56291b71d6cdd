"""What a run returns (`RunSummary`): the flow's result, printed by the CLI, written by
`--summary-json` and read back by the benchmark."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mnist_pipeline.core.runs.summary import RunSummary


def summary(**changes) -> RunSummary:
    fields = dict(
        version="v0003",
        preset="mlp",
        accuracy=0.9812,
        accuracy_interval_95=(0.9784, 0.9837),
        promoted=True,
        reason="test accuracy 0.9812 reaches the threshold 0.9700",
        production="v0003",
        epochs_run=5,
        train_seconds=12.5,
        version_dir="/a/registry/versions/v0003",
        run_dir="/a/runs/20261129T130000Z-1234",
        decision_log="/a/registry/decisions.jsonl",
    )
    return RunSummary(**{**fields, **changes})


@pytest.mark.parametrize(
    "original",
    [summary(), summary(promoted=False, production=None, reason="below")],
    ids=["promoted", "rejected, no production"],
)
def test_a_summary_reads_back_from_its_json(original):
    text = original.to_json()
    read = RunSummary.from_json(text)
    assert read == original
    assert isinstance(read.accuracy_interval_95, tuple)


def test_the_json_holds_every_field_by_name():
    written = json.loads(summary().to_json())
    assert list(written) == [field.name for field in dataclasses.fields(RunSummary)]
    assert written["accuracy_interval_95"] == [0.9784, 0.9837] and written["production"] == "v0003"


def test_a_summary_is_a_value():
    """Equal by content, usable as a key, changed only into a new summary that leaves the first as it was."""
    first, same = summary(), summary()
    assert first is not same and first == same and hash(first) == hash(same) and len({first, same}) == 1
    rejected = dataclasses.replace(first, promoted=False, production=None)
    assert rejected != first and (first.promoted, first.production) == (True, "v0003")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.promoted = False
    assert first == same and RunSummary.from_json(first.to_json()) == same
