"""The benchmark's figures, from the raw measurements of its runs, each beside its target (issues 5
and 13)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from bench.stages import STAGES

GIB = 1024**3


@dataclass(frozen=True)
class Figure:
    section: str
    name: str
    unit: str
    values: list[float | None]  # one per run; None: the run never got there (e.g. the accuracy never reached)
    target: str = ""  # e.g. "<= 0.5", ">= 0.99"; empty: reported, no target
    note: str = ""

    def _known(self) -> list[float]:
        return sorted(value for value in self.values if value is not None)

    @property
    def median(self) -> float | None:
        known = self._known()
        return statistics.median(known) if known and len(known) == len(self.values) else None

    @property
    def met(self) -> bool | None:
        """Whether the median meets the target (None when there is no target); a run that never got
        there fails the figure."""
        if not self.target:
            return None
        if self.median is None:
            return False
        op, bound = self.target.split()
        return self.median <= float(bound) if op == "<=" else self.median >= float(bound)

    def as_dict(self) -> dict:
        known = self._known()
        return {
            **asdict(self),
            "min": known[0] if known else None,
            "median": self.median,
            "max": known[-1] if known else None,
            "met": self.met,
        }


def _pick(runs: list[dict], key: str) -> list:
    return [run[key] for run in runs]


def _inferred_note(runs: list[dict], stages: tuple[str, ...]) -> str:
    count = sum(any(run["stages"][stage]["inferred"] for stage in stages) for run in runs)
    return (
        (
            f"in {count} of {len(runs)} runs a stage's start is inferred: its first states never reached "
            "the server (bench/stages.py)"
        )
        if count
        else ""
    )


def _overhead_figure(name: str, runs: list[dict], target: str = "") -> Figure:
    values = [run["wall_seconds"] - sum(stage["compute_seconds"] for stage in run["stages"].values()) for run in runs]
    return Figure("4. Orchestration overhead", name, "s", values, target, _inferred_note(runs, STAGES))


def _split_figure(name: str, runs: list[dict], target: str = "") -> Figure:
    return Figure(
        "5. Cache",
        name,
        "s",
        [run["stages"]["download-split"]["span_seconds"] for run in runs],
        target,
        _inferred_note(runs, ("download-split",)),
    )


def _ratios(numerators: list[dict], denominators: list[dict]) -> list[float]:
    """Per repeat: run i of one case over run i of the other (they ran side by side)."""
    return [a["wall_seconds"] / b["wall_seconds"] for a, b in zip(numerators, denominators, strict=True)]


def compute(runs: dict[str, list[dict]], accuracy_floor: float) -> list[Figure]:
    """All figures; `accuracy_floor` is the low end of the tutorial's 95% interval ("same accuracy")."""
    tut_cold, tut_warm = runs["tutorial-cold"], runs["tutorial-warm"]
    temp_cold, temp_warm = runs["flow-temp-cold"], runs["flow-temp-warm"]
    server_cold, server_warm = runs["flow-server-cold"], runs["flow-server-warm"]
    cnn, mlp, default = runs["tta-cnn"], runs["tta-mlp"], runs["default-run"]
    section = "1-2. Tutorial vs flow (seed-mlp)"
    figures = [
        Figure(section, "tutorial, cold: wall time", "s", _pick(tut_cold, "wall_seconds")),
        Figure(section, "tutorial, warm: wall time", "s", _pick(tut_warm, "wall_seconds")),
        Figure(section, "tutorial: test accuracy", "", _pick(tut_cold + tut_warm, "test_accuracy")),
        Figure(section, "flow, temporary server, cold: wall time", "s", _pick(temp_cold, "wall_seconds")),
        Figure(section, "flow, temporary server, warm: wall time", "s", _pick(temp_warm, "wall_seconds")),
        Figure(section, "flow, running server, cold: wall time", "s", _pick(server_cold, "wall_seconds")),
        Figure(section, "flow, running server, warm: wall time", "s", _pick(server_warm, "wall_seconds")),
        Figure(section, "ratio flow / tutorial, cold, temporary server", "x", _ratios(temp_cold, tut_cold)),
        Figure(section, "ratio flow / tutorial, warm, temporary server", "x", _ratios(temp_warm, tut_warm), "<= 0.5"),
        Figure(section, "ratio flow / tutorial, warm, running server", "x", _ratios(server_warm, tut_warm), "<= 0.5"),
        Figure(
            section,
            "flow: test accuracy",
            "",
            _pick(temp_cold + temp_warm + server_cold + server_warm, "test_accuracy"),
            f">= {accuracy_floor:.4f}",
            "same or better: not below the tutorial's 95% interval",
        ),
        Figure(
            "3. Time to accuracy",
            "cnn: training seconds to validation accuracy >= 0.99",
            "s",
            _pick(cnn, "seconds_to_target"),
            "<= 40",
        ),
        Figure(
            "3. Time to accuracy", "cnn: test accuracy of the saved model", "", _pick(cnn, "final_accuracy"), ">= 0.992"
        ),
        Figure(
            "3. Time to accuracy",
            "mlp: training seconds to validation accuracy >= 0.975",
            "s",
            _pick(mlp, "seconds_to_target"),
            "<= 10",
        ),
        Figure(
            "3. Time to accuracy", "mlp: test accuracy of the saved model", "", _pick(mlp, "final_accuracy"), ">= 0.975"
        ),
        _overhead_figure("running server, warm: wall - stages' compute", server_warm, "<= 2"),
        _overhead_figure("running server, cold: wall - stages' compute", server_cold),
        _overhead_figure("temporary server, warm: wall - stages' compute", temp_warm),
        _overhead_figure("temporary server, cold: wall - stages' compute", temp_cold),
        _split_figure("split stage, cold (runs: verify, parse, split, write)", temp_cold + server_cold, "<= 5"),
        _split_figure("split stage, warm (Cached)", temp_warm + server_warm, "<= 1"),
        Figure(
            "6. Memory",
            "default run (cnn): peak RSS of the flow process",
            "GiB",
            [run["peak_rss_bytes"] / GIB for run in default],
            "<= 2",
        ),
        Figure(
            "6. Memory",
            "default run (cnn): peak RSS with its temporary server",
            "GiB",
            [run["peak_tree_rss_bytes"] / GIB for run in default],
        ),
        Figure("Default run (cnn, warm, temporary server)", "wall time", "s", _pick(default, "wall_seconds")),
        Figure(
            "Default run (cnn, warm, temporary server)",
            "training seconds (train stage's own figure)",
            "s",
            _pick(default, "train_seconds"),
        ),
        Figure(
            "Default run (cnn, warm, temporary server)",
            "test accuracy",
            "",
            _pick(default, "test_accuracy"),
            ">= 0.992",
        ),
        Figure(
            "7. Continuous training",
            "unchanged rerun (training cached) / default run: wall time",
            "x",
            _ratios(runs["default-rerun"], default),
            "<= 0.15",
        ),
        Figure(
            "7. Continuous training", "unchanged rerun: wall time", "s", _pick(runs["default-rerun"], "wall_seconds")
        ),
    ]
    return figures
