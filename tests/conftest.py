"""Test set-up: a private Prefect home, the real MNIST split and models (slow tier), and a tiny
synthetic split with tiny models (fast tier).

Environment is set before Prefect is imported anywhere, so no test touches the user's ~/.prefect.
Modules of the slow tier carry `pytestmark = pytest.mark.slow`; `pytest -m "not slow"` runs the rest.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

for _name in [name for name in os.environ if name.startswith("PREFECT_")]:  # e.g. a server's URL or database
    del os.environ[_name]
_PREFECT_HOME = tempfile.mkdtemp(prefix="mnist-tests-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
from mnist_pipeline.core.support import settings  # noqa: E402  (imports no Prefect)

for _name in settings.ALL:  # a developer's shell must not leak into the tests
    os.environ.pop(_name, None)

import pytest  # noqa: E402

from mnist_pipeline.core.registry import Registry, open_registry  # noqa: E402
from mnist_pipeline.core.storage import store  # noqa: E402
from mnist_pipeline.core.storage.paths import ArtifactPaths, bundled_mnist_dir  # noqa: E402
from support.data import synthetic_split_files  # noqa: E402
from support.servers import migrated_prefect_database, prefect_server_in, settings_of_this_process  # noqa: E402
from support.shared import changed_since_made, made_once_per_run  # noqa: E402
from support.training import QUIET_LOG, convert_once_per_model, register, train_and_evaluate  # noqa: E402

# Order: the longest files first -----------------------------------------------------------------------

# The files that take a minute or more (a whole run's `--durations`), longest first. scripts/test.sh runs
# the suite on several workers, a file at a time each (`--dist loadfile --no-loadscope-reorder`: a
# file's module fixtures, such as a Prefect server or the team stack, are made once): starting the long
# ones first lets the workers end together. Then the files that need none of the fixtures made once for
# all workers (MADE_ONCE), so that the other workers have tests to run while the first makes them; then
# the rest. Within each of these, the fast tier's longest files (FAST_TIER_LONGEST) first, for the same
# reason. In-file order is kept, and otherwise the order of collection. Without xdist the order
# changes nothing: each test sets up what it asserts on.
LONGEST_FILES = (
    "test_team_mode.py",
    "test_pipeline.py",
    "test_server.py",
    "test_continuous_training.py",
    "test_team_stack.py",
    "test_sweep_mnist.py",
    "test_crash.py",
    "test_cli_mnist.py",
    "test_run_command.py",
    "test_packaging.py",
    "test_mlflow_server.py",
    "test_concurrency.py",
    "test_light_model.py",
    "test_serve_http.py",
)

FAST_TIER_LONGEST = ("test_cli.py", "test_train.py", "test_serve.py", "test_gate.py", "test_sweep.py", "test_mlflow.py")

MADE_ONCE = {
    "synthetic_split",
    "tiny_strong",
    "tiny_weak",
    "two_versions_template",
    "split_manifest",
    "mlp_run",
    "weak_run",
    "mlp_registry_template",
}


@pytest.hookimpl(optionalhook=True)  # without xdist (`-p no:xdist`) the hook does not exist
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (scripts/test.sh): a worker per core for the fast tier alone, which keeps every worker
    busy (another would only add its start-up: bench/ci_results.md), and one more when the slow tier
    runs, much of which waits on servers and processes."""
    cores = len(os.sched_getaffinity(0))
    return cores if "not slow" in config.getoption("markexpr") else cores + 1


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """An xdist worker ends here, its results and its fixtures' teardowns done: a worker that has loaded
    TensorFlow and Prefect took seconds more to tear its interpreter down, and the run waited for the
    slowest (bench/ci_results.md)."""
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    fast_rank = {name: position for position, name in enumerate(FAST_TIER_LONGEST)}
    waiting = {item.path.name for item in items if MADE_ONCE & set(item.fixturenames)}
    items.sort(  # stable
        key=lambda item: (
            rank.get(item.path.name, len(rank)),
            item.path.name in waiting,
            fast_rank.get(item.path.name, len(fast_rank)),
        )
    )


# Real servers and real MNIST (slow tier) -----------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--prefect-database",
        metavar="FILE",
        help="a Prefect SQLite database with every migration applied, for the tests' Prefect servers to start on "
        "copies of (scripts/test.sh makes one while the code is checked); default: made by the first test to need it",
    )


@pytest.fixture(scope="session")
def prefect_database(request, run_folder) -> Path:
    """A Prefect database with every migration applied (--prefect-database, or made once for all workers):
    each test's Prefect server starts on a copy of it."""
    given = request.config.getoption("--prefect-database")
    return Path(given) if given else made_once_per_run(run_folder, "prefect-database", migrated_prefect_database)


@pytest.fixture(scope="session")
def prefect_server(prefect_database, tmp_path_factory):
    """One Prefect server (SQLite, a copy of `prefect_database`) for this worker's session, the API of
    this process's Prefect settings while it runs (`settings_of_this_process`). Stopped by its id at the
    session's end."""
    home = tmp_path_factory.mktemp("session-prefect-home")
    with prefect_server_in(home, prefect_database) as local, settings_of_this_process(api_url=local.api_url):
        yield local


@pytest.fixture(scope="session")
def prefect_api_url(prefect_server) -> str:
    """The session server's API URL, for flows run in child processes."""
    return prefect_server.api_url


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory) -> Path:
    """A folder of this run that all its workers share: their temporary folders' parent. What a session
    fixture makes there with `made_once_per_run` is made once for all workers, and only read: copy it
    before changing it."""
    in_a_worker = "PYTEST_XDIST_WORKER" in os.environ  # (xdist's `worker_id` fixture is absent without xdist)
    basetemp = tmp_path_factory.getbasetemp()
    return basetemp.parent if in_a_worker else basetemp


@pytest.fixture(scope="session", autouse=True)
def _made_once_stay_as_made(run_folder):
    """Each worker, at its end, checks that the fixtures made once for all workers are as they were
    made: a test that changed one would have changed what the other workers' tests read."""
    yield
    changed = changed_since_made(run_folder)
    assert not changed, f"a test changed {changed} (made once, shared by the workers): copy it before changing it"


@pytest.fixture(scope="session")
def split_manifest(run_folder) -> Path:
    """The real MNIST split (tfds from the bundled files), built once, outside Prefect."""
    from mnist_pipeline.core.data.splits import SplitSources, ensure_split, make_recipe

    def make(folder: Path) -> Path:
        artifacts = ArtifactPaths.resolve(folder)
        recipe = make_recipe("bundle", bundled_mnist_dir(), 0.1, 42)
        return ensure_split(recipe, SplitSources(bundled_mnist_dir(), artifacts.tfds_data), artifacts.splits)

    return made_once_per_run(run_folder, "mnist-split", make)


@pytest.fixture(scope="session")
def split_files(split_manifest):
    from mnist_pipeline.core.data.splits import check_split

    return check_split(split_manifest)


@pytest.fixture(scope="session")
def mlp_run(split_files, run_folder):
    """(TrainedModel, Evaluation) of a real mlp trained 2 epochs on the full train split."""
    return made_once_per_run(
        run_folder, "mlp", lambda folder: train_and_evaluate(split_files, folder, "mlp", seed=7, epochs=2)
    )


@pytest.fixture(scope="session")
def weak_run(split_files, run_folder):
    """(TrainedModel, Evaluation) of a real but weaker model: the tutorial's MLP, one epoch at a
    tenth of its learning rate."""
    return made_once_per_run(
        run_folder,
        "weak",
        lambda folder: train_and_evaluate(split_files, folder, "seed-mlp", seed=3, epochs=1, learning_rate=1e-4),
    )


@pytest.fixture(scope="session")
def trained_mlp(mlp_run):
    return mlp_run[0]


@pytest.fixture(scope="session")
def mlp_registry_template(mlp_run, split_files, run_folder) -> Path:
    """An artifacts folder whose registry holds the real mlp as production model v0001 (copy it)."""

    def make(root: Path) -> Path:
        assert register(open_registry(root / "registry"), mlp_run, split_files, flow_run_id="run-1").promoted
        return root

    return made_once_per_run(run_folder, "mlp-registry", make)


@pytest.fixture
def mlp_artifacts(mlp_registry_template, tmp_path) -> Path:
    """A private copy of `mlp_registry_template`: an artifacts folder with the mlp as production v0001."""
    return Path(shutil.copytree(mlp_registry_template, tmp_path / "artifacts"))


# Tiny synthetic data (fast tier) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_split(run_folder):
    """A split of tiny synthetic digits, with the real split's files, manifest and checks."""
    return made_once_per_run(run_folder, "synthetic", lambda folder: synthetic_split_files(folder / "splits"))


@pytest.fixture(scope="session")
def tiny_strong(synthetic_split, run_folder):
    """(TrainedModel, Evaluation) of the tutorial's MLP trained 3 epochs on the synthetic split."""
    return made_once_per_run(
        run_folder,
        "tiny-strong",
        lambda folder: train_and_evaluate(synthetic_split, folder, "seed-mlp", seed=1, epochs=3, batch_size=32),
    )


@pytest.fixture(scope="session")
def tiny_weak(synthetic_split, run_folder):
    """(TrainedModel, Evaluation) of the same MLP after one epoch at a third of its learning rate: above
    the registration threshold (0.3), below the strong one."""
    return made_once_per_run(
        run_folder,
        "tiny-weak",
        lambda folder: train_and_evaluate(
            synthetic_split, folder, "seed-mlp", seed=1, epochs=1, batch_size=32, learning_rate=3e-4
        ),
    )


@pytest.fixture(scope="session")
def two_versions_template(tiny_strong, tiny_weak, synthetic_split, run_folder) -> Path:
    """An artifacts folder whose registry holds v0001 (strong, production) and v0002 (weak, rejected:
    worse than production), and whose splits/ holds the split they were tested on."""

    def make(root: Path) -> Path:
        registry = open_registry(root / "registry")
        first = register(registry, tiny_strong, synthetic_split, flow_run_id="run-1")
        second = register(registry, tiny_weak, synthetic_split, flow_run_id="run-2")
        assert first.promoted and not second.promoted and "worse than production v0001" in second.reason, second
        shutil.copytree(Path(synthetic_split.manifest_path).parent, root / "splits" / "synthetic")
        return root

    return made_once_per_run(run_folder, "two-versions", make)


@pytest.fixture
def two_versions(two_versions_template, tmp_path) -> Path:
    """A private copy of `two_versions_template` (an artifacts folder)."""
    return Path(shutil.copytree(two_versions_template, tmp_path / "artifacts"))


# Registries (tests/support/training.py's BACKENDS runs a module's tests against each backend) -------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One S3-compatible server (moto's server mode, a process on 127.0.0.1) for the session, stopped by
    its id."""
    from devstack.team.object_store import MotoS3Server

    server = MotoS3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    assert not server.stop(), "moto's server outlived its stop"


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """This test's process talks to the server, with a mirror of its own ("machine A")."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / "machine-a"))
    return s3_server


@pytest.fixture(scope="session")
def two_versions_in_store(s3_server, tiny_strong, tiny_weak, synthetic_split, tmp_path_factory) -> str:
    """The URL of a registry in the store holding what `two_versions` holds (copy it)."""
    url = s3_server.store_url("two-versions-template")
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3_server.env().items():
            env.setenv(name, value)
        env.setenv(store.CACHE_ENV_VAR, str(tmp_path_factory.mktemp("template-mirror")))
        registry = open_registry(url)
        assert register(registry, tiny_strong, synthetic_split, flow_run_id="run-1").promoted
        assert not register(registry, tiny_weak, synthetic_split, flow_run_id="run-2").promoted
    return url


@pytest.fixture
def registry_kind(request) -> str:
    """Where the registry fixtures keep their registry: "folder", unless the test module parametrises
    this with `pytest.mark.parametrize("registry_kind", BACKENDS, indirect=True)`: then also "store"."""
    return getattr(request, "param", "folder")


@pytest.fixture
def registry_location(registry_kind, request, tmp_path) -> str:
    """Where a new, empty registry of that kind goes: a folder, or a URL in the S3 server."""
    if registry_kind == "folder":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_env").store_url(f"registry-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def registry(registry_kind, registry_location, request, two_versions) -> Registry:
    """v0001 (strong, production) and v0002 (weak, rejected as worse than production), consistent,
    with the split they were tested on under `splits_dir`."""
    if registry_kind == "folder":
        location = str(two_versions / "registry")
    else:
        template, location = request.getfixturevalue("two_versions_in_store"), registry_location
        objects = store.ObjectStore.for_url(template)
        for url in objects.find(template):
            objects.fs.copy(objects._path(url), objects._path(location + url[len(template) :]))
    registry = open_registry(location, splits_dir=two_versions / "splits")
    assert registry.production() == "v0001" and registry.check() == []
    return registry


@pytest.fixture
def quiet_log():
    return QUIET_LOG


@pytest.fixture(scope="session", autouse=True)
def _convert_each_model_once(run_folder):
    """Registrations in this process reuse the conversion of a model converted before in this run, by
    any worker (`convert_once_per_model`). Session-wide, so that the session's registries are made
    with it too."""
    from mnist_pipeline.core.modelling import light

    cache = run_folder / "light-models"
    cache.mkdir(exist_ok=True)
    real_convert = light._convert
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(light, "_convert", convert_once_per_model(cache, real_convert))
        yield real_convert


@pytest.fixture(autouse=True)
def _real_conversion_in_its_own_tests(request, _convert_each_model_once, monkeypatch):
    """test_light_model.py tests conversion itself: every conversion there is a real one."""
    if request.module.__name__ == "test_light_model":
        from mnist_pipeline.core.modelling import light

        monkeypatch.setattr(light, "_convert", _convert_each_model_once)
