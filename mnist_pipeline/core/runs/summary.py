"""What one run of the pipeline returns: the flow's result, read by the CLI and the benchmark."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RunSummary:
    version: str  # the registered version of this run's model
    preset: str
    accuracy: float  # on the test split
    accuracy_interval_95: tuple[float, float]
    promoted: bool
    reason: str  # the gate's
    production: str | None  # after this run
    epochs_run: int
    train_seconds: float
    version_dir: str
    run_dir: str
    decision_log: str
    verdict: str = ""  # promoted, rejected or unchanged (the registry's word; empty in summaries before it)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunSummary:
        data = json.loads(text)
        return cls(**{**data, "accuracy_interval_95": tuple(data["accuracy_interval_95"])})
