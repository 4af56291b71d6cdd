"""Test set-up: a private Prefect home and server, and the real MNIST split built once per session.

Environment is set before Prefect is imported anywhere, so no test touches the user's ~/.prefect.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="mnist-tests-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MNIST_ARTIFACTS_DIR", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tasks.paths import BUNDLED_MNIST_DIR, ArtifactPaths  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Facts of the genuine MNIST (data/mnist/README.md).
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite in a temp dir) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server) -> str:
    """The session server's API URL, for flows run in child processes."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def session_artifacts(tmp_path_factory) -> ArtifactPaths:
    return ArtifactPaths(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def split_manifest(session_artifacts) -> Path:
    """The real MNIST split (tfds from the bundled files), built once, outside Prefect."""
    from tasks.split import download_split, make_recipe

    recipe = make_recipe("bundle", BUNDLED_MNIST_DIR, 0.1, 42)
    return Path(download_split.fn(recipe, str(BUNDLED_MNIST_DIR), str(session_artifacts.splits),
                                  str(session_artifacts.tfds_data)))


@pytest.fixture(scope="session")
def split_files(split_manifest):
    from tasks.preprocess import check_split

    return check_split(split_manifest)


@pytest.fixture(scope="session")
def trained_mlp(split_files, tmp_path_factory):
    """A real mlp trained 2 epochs on the full train split."""
    import logging

    from tasks.models import training_config
    from tasks.train import fit

    config = training_config("mlp", seed=7, epochs=2)
    return fit(config, split_files, tmp_path_factory.mktemp("run"), logging.getLogger("tests.train"))


@pytest.fixture(scope="session")
def mlp_evaluation(trained_mlp, split_files):
    from tasks.evaluate import evaluate_model

    return evaluate_model(trained_mlp, split_files, Path(trained_mlp.model_path).parent)


@pytest.fixture(scope="session")
def weak_candidate(split_files, tmp_path_factory):
    """A real but weaker model: the tutorial's MLP, one epoch at a tenth of its learning rate."""
    import logging

    from tasks.evaluate import evaluate_model
    from tasks.models import training_config
    from tasks.train import fit

    run_dir = tmp_path_factory.mktemp("weak")
    trained = fit(training_config("seed-mlp", seed=3, epochs=1, learning_rate=1e-4), split_files, run_dir,
                  logging.getLogger("tests.weak"))
    return trained, evaluate_model(trained, split_files, run_dir)
