"""The whole flow on the full MNIST, run in this process against the session's Prefect server:
promotion, published artifacts, the cached split, the gate, damaged splits and bundles, and the tfds
source offline.

One first run (the mlp, its preset's defaults) is made once; the tests that change an artifacts
folder each work on their own copy of it (`artifacts`), so no test sees another's runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from mnist_pipeline.core.data.extra_data import ExtraDataError
from mnist_pipeline.core.data.splits import SplitFiles, is_intact
from mnist_pipeline.core.data.tfds_import import import_tfds
from mnist_pipeline.core.registry import open_registry
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.storage.paths import bundled_mnist_dir
from mnist_pipeline.core.support.errors import ChecksumMismatchError
from mnist_pipeline.core.support.files import sha256_file
from support.data import bundle_copy, flip_byte
from support.pictures import hand_made_zero, write_png
from support.polling import wait_until
from support.prefect_state import artifact_types, logs_containing, settled_task_runs, task_runs

pytestmark = pytest.mark.slow

RUN_ARTIFACTS = {
    "mnist-training-report": "markdown",
    "mnist-per-class-accuracy": "table",
    "mnist-training-progress": "progress",
}

# Reads the production model and the canonical test IDX file with nothing of the pipeline's code.
RECOMPUTE_ACCURACY = """
import gzip, json, sys
from pathlib import Path
import numpy as np, keras
registry, bundle = Path(sys.argv[1]), Path(sys.argv[2])
version = json.loads((registry / "production.json").read_text())["version"]
model = keras.models.load_model(registry / "versions" / version / "model.keras", safe_mode=True)
images = np.frombuffer(gzip.open(bundle / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
labels = np.frombuffer(gzip.open(bundle / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
predicted = model.predict(images, batch_size=1000, verbose=0).argmax(axis=1)
print(json.dumps({"version": version, "correct": int((predicted == labels).sum()), "total": len(labels)}))
"""


def run_flow(**parameters):
    """(final state, RunSummary or the error) of one run of the flow in this process."""
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    state = mnist_pipeline(**parameters, return_state=True)
    return state, state.result(raise_on_failure=False)


def stage_states(client, state, stages=("download-split",)) -> dict[str, list[str]]:
    """{stage: state names of its task runs} of a finished flow run, once `stages` have settled."""
    runs = settled_task_runs(client, state.state_details.flow_run_id, stages)
    return {name: [run.state.name for run in group] for name, group in runs.items()}


def split_dir(artifacts: Path) -> Path:
    [split] = [path for path in (artifacts / "splits").iterdir() if not path.name.startswith(".")]
    return split


@pytest.fixture(scope="module")
def client(prefect_server):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


@dataclass(frozen=True)
class FirstRun:
    artifacts: Path
    flow_run_id: UUID
    summary: RunSummary
    state_name: str
    state_message: str


@pytest.fixture(scope="module")
def first_run(prefect_server, tmp_path_factory) -> FirstRun:
    """The first run in a new artifacts folder: the mlp with its preset's defaults. Read its folder,
    never change it (`artifacts` is a copy to change)."""
    artifacts = tmp_path_factory.mktemp("first-run") / "artifacts"
    state, summary = run_flow(preset="mlp", artifacts_dir=str(artifacts))
    assert state.is_completed(), summary
    return FirstRun(artifacts, state.state_details.flow_run_id, summary, state.name, state.message)


@pytest.fixture
def artifacts(first_run, tmp_path) -> Path:
    """A private copy of the first run's artifacts folder: its split, and the mlp as production v0001.
    Without Prefect's result cache, whose entries belong to the first run's folder."""
    return Path(
        shutil.copytree(first_run.artifacts, tmp_path / "artifacts", ignore=shutil.ignore_patterns("prefect-results"))
    )


def test_first_run_promotes_an_mlp_above_97_percent(first_run, client):
    summary = first_run.summary
    assert summary.promoted is True and summary.version == "v0001" and summary.preset == "mlp"
    assert summary.accuracy >= 0.97
    low, high = summary.accuracy_interval_95
    assert low < summary.accuracy < high
    registry = open_registry(first_run.artifacts / "registry")
    assert registry.production() == summary.production == "v0001"
    [decision] = registry.decisions()
    assert (decision.action, decision.candidate, decision.verdict) == ("register", "v0001", "promoted")
    assert decision.flow_run_id == str(first_run.flow_run_id) and decision.production_before is None
    run_dir = Path(summary.run_dir)
    assert run_dir.parent == first_run.artifacts / "runs"
    for name in ("model.keras", "metrics.json", "history.json", "training_curves.png", "confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    runs = settled_task_runs(client, first_run.flow_run_id)
    assert {name: [run.state.name for run in group] for name, group in runs.items()} == {
        name: ["Completed"] for name in ("download-split", "preprocess", "train", "evaluate", "register")
    }


def test_the_run_says_what_ran_and_its_verdict_without_opening_anything(first_run, client):
    assert (first_run.state_name, first_run.state_message) == ("Promoted", first_run.summary.reason)
    flow_run = client.read_flow_run(first_run.flow_run_id)
    assert flow_run.name.startswith("mlp-seed42-"), flow_run.name
    assert "preset:mlp" in flow_run.tags
    low, high = first_run.summary.accuracy_interval_95
    split = split_dir(first_run.artifacts).name
    logs_containing(
        client,
        first_run.flow_run_id,
        f"building split {split} from the MNIST files in {bundled_mnist_dir()}",
        f"built split {first_run.artifacts / 'splits' / split} in ",
        f"checked split {split} (bundle, validation fraction 0.1, seed 42): "
        "54000 train, 6000 validation, 10000 test images",
        f"test accuracy {first_run.summary.accuracy:.4f} (95% CI {low:.4f}-{high:.4f}, ",
        f"v0001 promoted: {first_run.summary.reason} (95% CI {low:.4f}-{high:.4f})",
    )


def test_report_and_table_artifacts_are_published(first_run, client):
    published = wait_until(
        lambda: artifact_types(client, first_run.flow_run_id), lambda found: set(RUN_ARTIFACTS) <= set(found)
    )
    assert published == RUN_ARTIFACTS


def test_recorded_accuracy_holds_in_a_fresh_process_on_raw_test_images(first_run):
    output = subprocess.run(
        [sys.executable, "-c", RECOMPUTE_ACCURACY, str(first_run.artifacts / "registry"), str(bundled_mnist_dir())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    recomputed = json.loads(output.strip().splitlines()[-1])
    assert recomputed["version"] == first_run.summary.version
    assert recomputed["correct"] / recomputed["total"] == first_run.summary.accuracy


def test_second_run_in_a_folder_takes_the_split_from_the_cache_and_a_high_threshold_rejects(artifacts, client):
    split_inode = split_dir(artifacts).stat().st_ino
    state, _ = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(artifacts))  # this folder's first run
    assert state.is_completed()
    state, summary = run_flow(
        preset="seed-mlp", epochs=1, learning_rate=2e-3, threshold=0.999, artifacts_dir=str(artifacts)
    )
    assert state.is_completed()  # a rejection is an outcome, not a failure
    assert stage_states(client, state)["download-split"] == ["Cached"]
    assert split_dir(artifacts).stat().st_ino == split_inode  # never rebuilt
    logs_containing(client, state.state_details.flow_run_id, f"checked split {split_dir(artifacts).name} (bundle, ")
    assert summary.promoted is False and summary.production == "v0001"
    registry = open_registry(artifacts / "registry")
    assert registry.production() == "v0001"
    last = registry.decisions()[-1]
    assert last.candidate == summary.version == "v0003"
    assert last.verdict == "rejected" and "below the threshold 0.9990" in last.reason
    assert registry.read_version(summary.version)["status"] == "rejected"


def test_a_moved_artifacts_folder_runs_from_its_own_split(artifacts, client, tmp_path):
    state, _ = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(artifacts))  # caches the split here
    assert state.is_completed()
    split_inode = split_dir(artifacts).stat().st_ino
    moved = artifacts.rename(tmp_path / "moved")

    state, summary = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(moved))
    assert state.is_completed(), summary  # not sent to the split's old place by the cache
    assert split_dir(moved).stat().st_ino == split_inode  # and not rebuilt either
    assert Path(summary.run_dir).parent == moved / "runs"
    # nor to the old place's model: trained again here, which gives the same weights as v0002
    assert stage_states(client, state, ("train",))["train"] == ["Completed"]
    assert (state.name, summary.version) == ("Unchanged", "v0002")
    assert open_registry(moved / "registry").versions() == ["v0001", "v0002"]


def test_an_identical_rerun_takes_the_cached_model_and_adds_no_version(artifacts, client):
    """Issue 12: nothing changed, nothing new: the train stage is `Cached`, the registry records the
    run as unchanged (identical to the version it registered), production does not move."""
    first_state, first = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(artifacts))
    assert first_state.is_completed() and first.version == "v0002" and not first.promoted
    registry = open_registry(artifacts / "registry")
    lines = len(registry.decisions())

    state, again = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(artifacts))
    assert stage_states(client, state, ("train",))["train"] == ["Cached"]
    assert (state.name, state.message, again.version, again.promoted) == ("Unchanged", again.reason, "v0002", False)
    assert again.reason.startswith("identical to v0002 (the same weights") and again.production == "v0001"
    last = registry.decisions()[-1]
    assert (last.action, last.verdict, last.candidate, last.flow_run_id) == (
        "unchanged",
        "unchanged",
        "v0002",
        str(state.state_details.flow_run_id),
    )
    assert registry.versions() == ["v0001", "v0002"] and len(registry.decisions()) == lines + 1

    state, forced = run_flow(preset="seed-mlp", epochs=1, force_retrain=True, artifacts_dir=str(artifacts))
    assert stage_states(client, state, ("train",))["train"] == ["Completed"]  # trained again, really
    assert sha256_file(Path(forced.run_dir) / "model.keras") != registry.read_version("v0002")["model_sha256"]
    assert (state.name, forced.version) == ("Unchanged", "v0002")  # other file bytes, the same weights
    assert registry.versions() == ["v0001", "v0002"] and registry.production() == "v0001"


def test_weaker_challenger_above_threshold_is_rejected(artifacts, first_run):
    champion = first_run.summary
    state, summary = run_flow(preset="seed-mlp", epochs=1, threshold=0.9, artifacts_dir=str(artifacts))
    assert state.is_completed()
    assert 0.9 <= summary.accuracy < champion.accuracy
    assert summary.promoted is False and "worse than production v0001" in summary.reason
    assert (state.name, state.message) == ("Rejected", summary.reason)
    registry = open_registry(artifacts / "registry")
    assert registry.production() == "v0001"
    last = registry.decisions()[-1]
    assert (last.candidate, last.verdict, last.production_before) == (summary.version, "rejected", "v0001")
    assert last.champion_accuracy == champion.accuracy and last.candidate_accuracy == summary.accuracy


def test_damaged_split_on_disk_is_rebuilt_not_served(artifacts, first_run, client):
    state, _ = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(artifacts))  # caches the split here
    assert state.is_completed()
    split = split_dir(artifacts)
    SplitFiles(str(split / "manifest.json"), "").path("validation").write_bytes(
        b"truncated"
    )  # the cache still names this split
    state, summary = run_flow(preset="seed-mlp", epochs=1, artifacts_dir=str(artifacts))
    assert state.is_completed(), summary
    assert stage_states(client, state)["download-split"] == ["Completed"]
    assert is_intact(split)
    rebuilt = SplitFiles(str(split / "manifest.json"), "").load("validation")
    original = SplitFiles(str(split_dir(first_run.artifacts) / "manifest.json"), "").load("validation")
    assert all((mine == theirs).all() for mine, theirs in zip(rebuilt, original, strict=True))  # the same split again


def test_flipped_byte_in_bundle_fails_before_training_and_registers_nothing(artifacts, client, tmp_path):
    bundle = bundle_copy(tmp_path / "bundle")
    images = bundle / "train-images-idx3-ubyte.gz"
    flip_byte(images, images.stat().st_size // 2)
    registry = open_registry(artifacts / "registry")
    before = (registry.versions(), registry.production(), registry.backend.decision_log.read_text())

    state, error = run_flow(preset="seed-mlp", bundle_dir=str(bundle), artifacts_dir=str(artifacts))
    assert state.is_failed()
    assert isinstance(error, ChecksumMismatchError)
    assert str(images) in str(error) and "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in str(
        error
    )
    runs = settled_task_runs(client, state.state_details.flow_run_id, ("download-split",))
    assert [run.state.type.value for run in runs["download-split"]] == ["FAILED"]
    assert set(runs) == {"download-split"}, "no stage after the split may run"
    assert (registry.versions(), registry.production(), registry.backend.decision_log.read_text()) == before


def seed_tfds_download_cache(tfds_data_dir: Path) -> dict[Path, int]:
    """Put the bundled MNIST files where tfds' DownloadManager keeps a finished download of them
    (downloads/mnist/<name made of the URL and checksum>, beside its .INFO file), as an earlier online
    run of `--data-source tfds` leaves them. Returns {file: inode}."""
    tfds = import_tfds()
    downloads = tfds_data_dir / "downloads" / "mnist"
    downloads.mkdir(parents=True)
    placed = {}
    for url, info in tfds.builder_cls("mnist").url_infos.items():
        path = downloads / tfds.download.resource.get_dl_fname(url, info.checksum)
        shutil.copyfile(bundled_mnist_dir() / info.filename, path)
        path.with_name(path.name + ".INFO").write_text(
            json.dumps(
                {"urls": [url], "dataset_names": ["mnist"], "original_fname": info.filename, "url_info": info.asdict()}
            )
        )
        placed[path] = path.stat().st_ino
    assert len(placed) == 4
    return placed


def test_tfds_source_runs_offline_from_tfds_download_cache(first_run, tmp_path):
    artifacts = tmp_path / "artifacts"
    cached = seed_tfds_download_cache(artifacts / "tfds")
    state, summary = run_flow(preset="seed-mlp", epochs=1, data_source="tfds", artifacts_dir=str(artifacts))
    assert state.is_completed(), summary
    assert {path: path.stat().st_ino for path in cached} == cached, "tfds downloaded again"

    manifest = json.loads((split_dir(artifacts) / "manifest.json").read_text())
    assert manifest["recipe"]["source"] == "tfds"
    assert open_registry(artifacts / "registry").read_json(summary.version, "params.json")["data_source"] == "tfds"
    from_tfds = SplitFiles(str(split_dir(artifacts) / "manifest.json"), "")
    from_bundle = SplitFiles(str(split_dir(first_run.artifacts) / "manifest.json"), "")
    for name in ("train", "validation", "test"):  # the same images, split the same way
        for mine, theirs in zip(from_tfds.load(name), from_bundle.load(name), strict=True):
            assert (mine == theirs).all(), name


def test_extra_pictures_make_a_new_split_whose_train_part_holds_them(artifacts, client, tmp_path):
    extra = tmp_path / "extra"
    (extra / "0").mkdir(parents=True)
    write_png(extra / "0" / "drawn.png", hand_made_zero())
    write_png(extra / "0" / "drawn-lower.png", hand_made_zero(15.0))
    state, summary = run_flow(preset="seed-mlp", epochs=1, extra_data=str(extra), artifacts_dir=str(artifacts))
    assert state.is_completed(), summary
    assert stage_states(client, state)["download-split"] == ["Completed"]  # not the cached split without them
    [manifest] = [
        path
        for path in (artifacts / "splits").glob("*/manifest.json")
        if json.loads(path.read_text())["recipe"]["extra_sha256"]
    ]
    counts = {name: entry["count"] for name, entry in json.loads(manifest.read_text())["splits"].items()}
    assert counts == {"train": 54002, "validation": 6000, "test": 10000}
    logs_containing(
        client,
        state.state_details.flow_run_id,
        f"added 2 extra training pictures from {extra}",
        f"checked split {manifest.parent.name} (bundle + 2 extra pictures, ",
    )


def test_bad_extra_data_fails_the_run_before_any_stage(artifacts, client, tmp_path):
    extra = tmp_path / "extra"
    (extra / "ten").mkdir(parents=True)
    state, error = run_flow(preset="seed-mlp", extra_data=str(extra), artifacts_dir=str(artifacts))
    assert state.is_failed() and isinstance(error, ExtraDataError)
    assert f"{extra / 'ten'}: not a class folder" in str(error)
    assert task_runs(client, state.state_details.flow_run_id) == {}  # the plan is checked before any stage
