"""Four flow runs at once on one artifacts directory (separate processes, one Prefect server): the
split is built once, every run registers exactly one whole version, and production is the best."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mnist_pipeline.core.data.splits import is_intact
from mnist_pipeline.core.modelling.models import load_model
from mnist_pipeline.core.registry import open_registry
from support.commands import FLOW_SCRIPT

pytestmark = pytest.mark.slow

LEARNING_RATES = ("0.001", "0.002", "0.0005", "0.003")  # four different models from one split


class SplitWatcher(threading.Thread):
    """Watches `splits_root` while the runs go: every split folder seen being written (`.tmp-*`) and
    the inode of each published split folder, so a split built twice shows even if the second copy
    replaced the first."""

    def __init__(self, splits_root: Path):
        super().__init__(daemon=True)
        self.splits_root = splits_root
        self.building: set[str] = set()
        self.published: dict[str, set[int]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.look()
            self.stopped.wait(0.2)

    def look(self) -> None:
        try:
            entries = list(os.scandir(self.splits_root))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".tmp-"):
                self.building.add(entry.name)
            elif not entry.name.startswith(".") and entry.is_dir():
                with contextlib.suppress(FileNotFoundError):  # replaced while looking
                    self.published.setdefault(entry.name, set()).add(entry.inode())

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.look()


def test_four_concurrent_runs_keep_the_registry_consistent(prefect_api_url, tmp_path):
    artifacts = tmp_path / "artifacts"
    watcher = SplitWatcher(artifacts / "splits")
    watcher.start()
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONWARNINGS": "ignore"}
    runs = [
        subprocess.Popen(
            [
                *(sys.executable, str(FLOW_SCRIPT), "--artifacts-dir", str(artifacts), "--learning-rate", rate),
                *["--preset", "mlp", "--epochs", "1", "--threshold", "0.9", "--per-class-floor", "0.8"],
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rate in LEARNING_RATES
    ]
    try:
        outputs = [run.communicate(timeout=1200)[0] for run in runs]
    finally:
        watcher.stop()
    assert [run.returncode for run in runs] == [0, 0, 0, 0], "\n\n".join(o[-2000:] for o in outputs)

    registry = open_registry(artifacts / "registry")
    assert registry.versions() == ["v0001", "v0002", "v0003", "v0004"]  # unique and gap-free
    for version in registry.versions():
        load_model(registry.model_path(version))  # every version whole, as registered

    decisions = registry.decisions()
    assert sorted(d.candidate for d in decisions) == registry.versions()  # one line per run
    assert {d.action for d in decisions} == {"register"}
    assert len({d.flow_run_id for d in decisions}) == 4 and None not in {d.flow_run_id for d in decisions}
    for decision in decisions:
        assert decision.candidate_accuracy is not None and decision.threshold == 0.9 and decision.reason
        if decision.promoted:
            assert decision.candidate_accuracy >= 0.9
            assert decision.production_before is None or decision.candidate_accuracy >= decision.champion_accuracy
    promoted = [d for d in decisions if d.promoted]
    assert promoted
    production = registry.production()
    assert production == promoted[-1].candidate  # the log's last promotion is production
    record = json.loads((registry.version_dir(production) / "version.json").read_text())
    assert record["status"] == "promoted"
    assert record["test_accuracy"] == max(d.candidate_accuracy for d in promoted)
    assert registry.check() == []

    splits = [path for path in (artifacts / "splits").iterdir() if not path.name.startswith(".")]
    assert len(splits) == 1 and is_intact(splits[0])
    assert len(watcher.building) == 1, f"the split was built {len(watcher.building)} times: {watcher.building}"
    assert watcher.published == {splits[0].name: {splits[0].stat().st_ino}}, "the split folder was replaced"
