"""Write the benchmark's results: `results.json` (everything) and `results.md` (figures beside targets)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.figures import Figure
from bench.stages import STAGES

DEFINITIONS = """\
- Every case runs in a fresh process; wall time is measured from outside, from process start to exit.
- *Cold*: empty caches (a new tfds data dir for the tutorial; a new artifacts dir for the flow: no split,
  no tfds data, no Prefect result cache). *Warm*: the same directory again, right after.
- *Temporary server*: no `PREFECT_API_URL`, so each flow run starts Prefect's temporary server, as
  `python flows/mnist_flow.py` does out of the box. *Running server*: `prefect server start` runs
  beforehand (started by the benchmark) and `PREFECT_API_URL` points at it.
- A stage's compute time is its task run's Running -> final state interval, as the Prefect server
  recorded it; TensorFlow's import (~5 s) falls in the first stage that needs it. Overhead = wall time
  minus the sum of the five stages' compute: interpreter start, imports, server start, Prefect's
  bookkeeping, process exit. The split stage's time is Pending -> final (for a cached stage, the lookup).
  When a stage's first states never reached the server (it happens to long cold split stages), its
  start is the previous stage's end; the figure's note says how often.
- Ratios pair repeat *i* of the flow with repeat *i* of the tutorial (they ran side by side).
- Time to accuracy: `bench/time_to_accuracy.py --one`, a training through the train stage's `fit`
  (same preset, seed, input pipeline, early stopping): the seconds until the validation accuracy first
  reaches the target (only the epochs are timed), and the saved model's test accuracy.
- A target is met when the median meets it; "same or better accuracy" is: not below the low end of
  the 95% Wilson interval of the tutorial's median test accuracy (10,000 test images).
"""


def _fmt(value, unit: str) -> str:
    if value is None:
        return "not reached"
    if unit == "":
        return f"{value:.4f}"
    return f"{value:.2f}" if unit in ("x", "GiB") else f"{value:.1f}"


def _figure_table(figures: list[Figure]) -> list[str]:
    lines = []
    for section in dict.fromkeys(figure.section for figure in figures):
        lines += [
            f"### {section}",
            "",
            "| figure | min | median | max | target | met |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for figure in (f for f in figures if f.section == section):
            d = figure.as_dict()
            unit = f" ({figure.unit})" if figure.unit else ""
            met = {True: "yes", False: "**NO**", None: ""}[d["met"]]
            target = " ".join(
                part
                for part in (
                    f"{figure.target} {figure.unit}".strip() if figure.target else "",
                    f"({figure.note})" if figure.note else "",
                )
                if part
            )
            lines.append(
                f"| {figure.name}{unit} | {_fmt(d['min'], figure.unit)} | {_fmt(d['median'], figure.unit)} | "
                f"{_fmt(d['max'], figure.unit)} | {target} | {met} |"
            )
        lines.append("")
    return lines


def _overhead_parts(run: dict) -> tuple[float, float, float]:
    """(start-up: process start to flow run Running; in the flow: its span minus the stages' compute;
    shutdown: flow run's final state to process exit)."""
    compute = sum(stage["compute_seconds"] for stage in run["stages"].values())
    startup = run["flow_run_started_at"] - run["started_at"]
    in_flow = run["flow_run_ended_at"] - run["flow_run_started_at"] - compute
    shutdown = run["started_at"] + run["wall_seconds"] - run["flow_run_ended_at"]
    return startup, in_flow, shutdown


def _stage_table(runs: dict[str, list[dict]]) -> list[str]:
    """Median seconds per stage (compute) for each flow case, with the overhead's parts and wall time."""
    lines = [
        "| flow case | " + " | ".join(STAGES) + " | overhead: start-up | in the flow | shutdown | wall |",
        "| --- |" + " --- |" * (len(STAGES) + 4),
    ]
    cases = {
        "flow-temp-cold": "seed-mlp, temporary server, cold",
        "flow-temp-warm": "seed-mlp, temporary server, warm",
        "flow-server-cold": "seed-mlp, running server, cold",
        "flow-server-warm": "seed-mlp, running server, warm",
        "default-run": "cnn (default run), temporary server, warm",
    }
    for case, label in cases.items():
        case_runs = runs.get(case, [])
        if not case_runs or "stages" not in case_runs[0]:
            continue
        cells = [statistics.median(run["stages"][stage]["compute_seconds"] for run in case_runs) for stage in STAGES]
        parts = [statistics.median(part) for part in zip(*(_overhead_parts(run) for run in case_runs), strict=True)]
        wall = statistics.median(run["wall_seconds"] for run in case_runs)
        lines.append(f"| {label} | " + " | ".join(f"{c:.1f}" for c in cells + parts + [wall]) + " |")
    return lines + [""]


def write(output_dir: Path, meta: dict, runs: dict[str, list[dict]], figures: list[Figure]) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "results.json", output_dir / "results.md"
    json_path.write_text(json.dumps({**meta, "figures": [f.as_dict() for f in figures], "runs": runs}, indent=1) + "\n")

    machine, load = meta["machine"], meta["load"]
    unmet = [f"{f.section.split('.')[0]}. {f.name}" if "." in f.section else f.name for f in figures if f.met is False]
    lines = [
        "# Benchmark: the pipeline beside the tutorial",
        "",
        f"`{meta['command']}` on {meta['started']}, {meta['repeats']} run(s) per case, "
        f"{meta['duration_seconds'] / 60:.0f} minutes in all. Raw figures: `results.json`.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']:.0f} GiB; "
        f"bf16 in hardware (avx512_bf16/amx): {machine['bf16_hardware']}; no GPU",
        f"- {', '.join(f'{name} {version}' for name, version in meta['versions'].items())}",
        f"- git: {meta['git']}",
        f"- Other work on the machine while a case ran (CPU busy minus the case's own CPU, in cores of "
        f"{machine['cores']}): median {load['other_cores_median']:.2f}, max {load['other_cores_max']:.2f}; "
        f"the running-server cases count that server here. 1-minute load average as each case started: "
        f"min {load['min']:.2f}, median {load['median']:.2f}, max {load['max']:.2f} (the previous case included)",
        "",
        "## Figures",
        "",
        *(
            [f"**Smoke run ({meta['epochs_override']} epoch per training): the targets do not apply.**", ""]
            if meta["epochs_override"]
            else []
        ),
        *(
            ["**Targets not met:** " + "; ".join(unmet) + " (what bounds them: docs/performance.md).", ""]
            if unmet
            else ["All targets met.", ""]
        ),
        *_figure_table(figures),
        "### Where a flow run's time goes (median seconds of compute per stage)",
        "",
        *_stage_table(runs),
        "## How the figures are measured",
        "",
        DEFINITIONS,
    ]
    md_path.write_text("\n".join(lines))
    return md_path, json_path
