"""Training respects team mode's global concurrency limit when the server has one (real Prefect server).

Without the limit nothing waits (every sweep test runs without one). With it, a training whose slot is
taken waits for it: here the test itself holds the limit's only slot, as another training would.
"""

from __future__ import annotations

import threading

import pytest

from mnist_pipeline.core.modelling.models import training_config
from mnist_pipeline.tasks.train import TRAINING_CONCURRENCY_LIMIT, train
from support.polling import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def training_limit_of_one(prefect_server):
    """The global limit `TRAINING_CONCURRENCY_LIMIT` with 1 slot on the session's server, removed afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINING_CONCURRENCY_LIMIT, limit=1))
        try:
            yield
        finally:
            client.delete_global_concurrency_limit_by_name(TRAINING_CONCURRENCY_LIMIT)


def test_training_waits_while_the_limits_only_slot_is_taken(training_limit_of_one, synthetic_split, tmp_path):
    from prefect.concurrency.sync import concurrency

    run_dir = tmp_path / "run"
    config = training_config("seed-mlp", 1, epochs=1, batch_size=32)
    outcome: list = []
    trainer = threading.Thread(
        target=lambda: outcome.append(
            train(config, synthetic_split, str(run_dir), str(tmp_path / "tensorboard"), return_state=True)
        )
    )
    with concurrency(TRAINING_CONCURRENCY_LIMIT, occupy=1, strict=True):  # the slot another training would hold
        trainer.start()
        # Keras writes history.csv as soon as training begins; while the slot is held it must not
        with pytest.raises(AssertionError, match="still not settled"):
            wait_until(lambda: (run_dir / "history.csv").exists(), bool, timeout=20)
        assert trainer.is_alive()
    trainer.join(timeout=300)
    [state] = outcome
    assert state.is_completed(), state
    assert (run_dir / "model.keras").is_file()
