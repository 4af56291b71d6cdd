"""Four flow runs at once on one artifacts directory (separate processes, one Prefect server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import PROJECT_ROOT
from tasks.evaluate import load_model
from tasks.registry import Registry
from tasks.split import is_intact

LEARNING_RATES = ("0.001", "0.002", "0.0005", "0.003")  # four different models from one split


def test_four_concurrent_runs_keep_the_registry_consistent(prefect_api_url, tmp_path):
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    runs = [
        subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "flows" / "mnist_flow.py"), "--preset", "mlp", "--epochs", "1",
             "--learning-rate", rate, "--threshold", "0.9", "--artifacts-dir", str(artifacts)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rate in LEARNING_RATES
    ]
    outputs = [run.communicate(timeout=1200)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], "\n\n".join(o[-2000:] for o in outputs)

    registry = Registry(artifacts / "registry")
    assert registry.versions() == ["v0001", "v0002", "v0003", "v0004"]  # unique and gap-free
    for version in registry.versions():
        load_model(registry.version_dir(version) / "model.keras")  # every version whole

    decisions = registry.decisions()
    assert sorted(d["candidate"] for d in decisions) == registry.versions()  # one line per run
    assert len({d["flow_run_id"] for d in decisions}) == 4
    for decision in decisions:
        assert {"candidate", "candidate_accuracy", "champion", "champion_accuracy", "threshold", "verdict",
                "reason", "time", "flow_run_id"} <= set(decision)
        if decision["promoted"]:
            assert decision["candidate_accuracy"] >= 0.9
            assert decision["champion"] is None or decision["candidate_accuracy"] >= decision["champion_accuracy"]
    promoted = [d for d in decisions if d["promoted"]]
    assert promoted
    production = registry.production()
    record = json.loads((registry.version_dir(production) / "version.json").read_text())
    assert record["status"] == "promoted"
    assert record["test_accuracy"] == max(d["candidate_accuracy"] for d in promoted)

    splits = [path for path in (artifacts / "splits").iterdir() if not path.name.startswith(".")]
    assert len(splits) == 1 and is_intact(splits[0])
