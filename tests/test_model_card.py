"""The model card says what data trained the model: MNIST's official split, or that plus the extra
pictures a run added to its train split."""

from __future__ import annotations

import pytest

from mnist_pipeline.core.registry.decisions import DecisionRecord
from mnist_pipeline.core.registry.report import render_model_card

RECORD = {
    "preset": "mlp",
    "created": "2026-12-06T00:00:00+00:00",
    "flow_run_id": "run-1",
    "data_sha256": "ab" * 32,
    "status": "promoted",
    "versions": {"tensorflow": "2.21.0", "keras": "3.0"},
}
TRAINING = {"preset": "mlp", "epochs": 2, "batch_size": 32, "learning_rate": 1e-3, "patience": 2, "seed": 1}
METRICS = {"accuracy": 0.9, "accuracy_interval_95": [0.88, 0.92], "correct": 90, "total": 100}
DECISION = DecisionRecord(
    action="register",
    candidate="v0001",
    production_before=None,
    promoted=True,
    reason="no production model yet",
    time="2026-12-06T00:00:00+00:00",
)


@pytest.mark.parametrize(
    "extra, says",
    [
        (None, "**Data**: MNIST (the official train/test split), split manifest"),  # versions from before the count
        (0, "**Data**: MNIST (the official train/test split), split manifest"),
        (1, "**Data**: MNIST's official training images plus 1 extra picture (added to the train split only"),
        (12, "**Data**: MNIST's official training images plus 12 extra pictures (added to the train split only"),
    ],
)
def test_the_model_card_names_the_training_data(extra, says):
    params = {"training": TRAINING, **({"extra_pictures": extra} if extra is not None else {})}
    card = render_model_card(RECORD, params, METRICS, DECISION)
    assert says in card
    assert ("official train/test split" in card) is not bool(extra)
