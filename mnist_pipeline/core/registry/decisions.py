"""The decision record: one typed, versioned schema for every line of the registry's decision log.

Each registration's gate verdict, manual promotion, rollback and repair is one `DecisionRecord`,
written as one JSON line (`to_json`) and read back (`from_json`) here and nowhere else. Lines of
schema 1 (before the record had a schema number) and schema 2 (before the gate recorded each
criterion) are read too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

SCHEMA = 3
Action = Literal["register", "unchanged", "promote", "rollback", "repair"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DecisionRecord:
    """What was decided about one version, when, by whom and why.

    `candidate` is the version decided on (for a rollback: the version production returns to; for a
    repair: the version production was set to, or None). `production_before` is the production version
    at the time, `promoted` whether production moved to `candidate`.
    """

    action: Action
    candidate: str | None
    production_before: str | None
    promoted: bool
    reason: str
    time: str
    candidate_accuracy: float | None = None
    champion_accuracy: float | None = None  # production's accuracy on the candidate's test split
    threshold: float | None = None
    forced: bool = False  # promoted past the gate by hand
    flow_run_id: str | None = None
    who: str | None = None
    why: str | None = None
    # The gate's criteria, each {name, value, limit, passed, text} (core/evaluation/gate.py's `Criterion`), and
    # the comparison with production on the same test images (`Comparison`: images right, the
    # discordant counts and the exact McNemar p-value); None where no gate ran or before schema 3.
    criteria: list[dict[str, Any]] | None = None
    comparison: dict[str, Any] | None = None
    schema: int = SCHEMA

    @property
    def verdict(self) -> str:
        """promoted, rejected, unchanged, rolled back or repaired: the one place this word is chosen."""
        if self.action == "rollback":
            return "rolled back"
        if self.action == "repair":
            return "repaired"
        if self.action == "unchanged":
            return "unchanged"
        return "promoted" if self.promoted else "rejected"

    @property
    def moves_production(self) -> bool:
        return self.promoted and self.action in ("register", "promote", "rollback")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionRecord:
        """A record from its dict, of this schema or an earlier one; raises KeyError/TypeError if it is
        none of them. An earlier record is read into this schema's fields (schema 2 lacks only the
        gate's criteria), so it is written back as this schema."""
        data = dict(data)
        if data.setdefault("schema", 1) == 1:
            data.setdefault("action", "register")
            before = data.pop("champion", None) if data["action"] == "register" else data.get("previous")
            data["production_before"] = before
        data["schema"] = max(data["schema"], SCHEMA)
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def from_json(cls, line: str) -> DecisionRecord:
        return cls.from_dict(json.loads(line))
