"""Benchmark: a sweep of 4 mlp candidates on 2 Dask worker processes vs the same 4 trained one after
another in one process (TensorFlow with 2 threads), on the same machine, one run each.

    python bench/sweep.py            # writes bench/sweep_results.md and bench/sweep_results.json

A is `mnist-pipeline sweep --max-parallel 2`, as users run it (temporary Prefect server, local
cluster, evaluation and registration of the selected candidate); B the same command with
`--max-parallel 1`, whose one worker process trains the four one after another with both cores, so
A/B measures what the parallelism buys with everything else equal; C is only the four `fit` calls
after importing TensorFlow, no Prefect and no Dask, to show what the machinery around them costs.
A and B are repeated with the tutorial's smaller model, which one training cannot keep 2 cores busy
with: the contrast shows what bounds the speedup.
Every case starts from a split built beforehand (the sweeps find it in their cache). Where a
sweep's time goes is read from its log: start-up until the candidates' subflow begins, the subflow
(cluster start, workers' imports, trainings, cluster close), and what follows it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # `python bench/sweep.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import Measurement, run_case  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GRID = ["--preset", "mlp", "--learning-rate", "0.002", "0.004", "--batch-size", "256", "512"]
# the tutorial's small model (784-50-50-10, batches of 100-200): one training of it cannot keep 2 cores busy
SMALL_GRID = ["--preset", "seed-mlp", "--learning-rate", "0.001", "0.002", "--batch-size", "100", "200"]
WORKERS = 2
ENTRY = str(Path(sys.executable).parent / "mnist-pipeline")
LOG_TIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \|")


def sequential(manifest: str) -> None:
    """The comparison case, run in its own process: the sweep's four configurations, one `fit` after
    another. Prints JSON: seconds to import TensorFlow, and each candidate's whole and `fit` seconds."""
    import logging

    started = time.perf_counter()
    import tensorflow  # noqa: F401

    from mnist_pipeline.core.data.splits import check_split
    from mnist_pipeline.core.modelling.parameters import validate_parameters
    from mnist_pipeline.core.modelling.training import fit
    from mnist_pipeline.core.runs.sweep import SweepParameters, candidate_configs

    imported = time.perf_counter() - started
    data = check_split(Path(manifest))
    params = validate_parameters(
        {"preset": "mlp", "learning_rate": [0.002, 0.004], "batch_size": [256, 512]}, SweepParameters
    )
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for number, config in enumerate(candidate_configs(params), start=1):
            began = time.perf_counter()
            trained = fit(config, data, Path(work) / f"c{number:02d}", logging.getLogger("bench"))
            runs.append(
                {
                    "seconds": time.perf_counter() - began,
                    "fit_seconds": trained.train_seconds,
                    "epochs_run": trained.epochs_run,
                }
            )
    print(json.dumps({"import_seconds": imported, "runs": runs}))


def _log_times(text: str, *markers: str) -> list[float]:
    """Seconds since midnight of the first log line containing each marker."""
    found = []
    for marker in markers:
        line = next(line for line in text.splitlines() if marker in line and LOG_TIME.match(line))
        clock = datetime.strptime(LOG_TIME.match(line).group(1), "%H:%M:%S.%f")
        found.append(clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6)
    return found


def sweep_phases(measurement: Measurement) -> dict[str, float]:
    """Where the sweep's wall time went, from its console log (log times are UTC times of day)."""
    begun, ended = _log_times(
        measurement.stderr + measurement.stdout,
        "Beginning subflow run 'candidates'",
        "Flow run 'candidates' - Finished in state",
    )
    started = datetime.fromtimestamp(measurement.started_at, UTC)
    start = started.hour * 3600 + started.minute * 60 + started.second + started.microsecond / 1e6
    return {
        "start-up, split (cached), preprocess": begun - start,
        "candidates subflow": ended - begun,
        "evaluate, register, report, exit": measurement.wall_seconds - (ended - start),
    }


def sweep_case(work: Path, env: dict, workers: int, grid: list[str] = GRID) -> dict:
    """`mnist-pipeline sweep` on a local cluster of `workers` processes: wall time, phases, candidates, output."""
    name = f"{grid[1]}-{workers}"
    artifacts, summary_json = work / f"artifacts-{name}", work / f"summary-{name}.json"
    shutil.copytree(work / "artifacts", artifacts)  # the built split, found in the cache
    measurement = run_case(
        [
            ENTRY,
            "sweep",
            *grid,
            "--max-parallel",
            str(workers),
            "--artifacts-dir",
            str(artifacts),
            "--summary-json",
            str(summary_json),
        ],
        env,
        str(work),
    )
    summary = json.loads(summary_json.read_text())
    return {
        "wall_seconds": measurement.wall_seconds,
        "phases": sweep_phases(measurement),
        "candidates": summary["candidates"],
        "selected": summary["selected"],
        "load_before": measurement.load_before,
        "other_cores": measurement.other_cores,
        "peak_tree_rss_bytes": measurement.peak_tree_rss_bytes,
        "output": measurement.stdout,
    }


def main() -> int:
    from mnist_pipeline.core.data.splits import SplitSources, ensure_split, make_recipe
    from mnist_pipeline.core.storage.paths import bundled_mnist_dir

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    recipe = make_recipe("bundle", bundled_mnist_dir(), 0.1, 42)
    sources = SplitSources(bundled_mnist_dir(), work / "artifacts" / "tfds")
    manifest = ensure_split(recipe, sources, work / "artifacts" / "splits")
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("PREFECT_API_URL", None)

    # warm Prefect's database and the file cache the same way for every case: one tiny sweep first
    run_case([ENTRY, "sweep", *GRID, "--epochs", "1", "--artifacts-dir", str(work / "warm")], env, str(work))
    parallel, one_worker = sweep_case(work, env, WORKERS), sweep_case(work, env, 1)
    small = {"parallel": sweep_case(work, env, WORKERS, SMALL_GRID), "one_worker": sweep_case(work, env, 1, SMALL_GRID)}
    plain = run_case(
        [sys.executable, __file__, "--sequential", str(manifest)],
        {**env, "TF_NUM_INTRAOP_THREADS": str(WORKERS), "TF_NUM_INTEROP_THREADS": str(WORKERS)},
        str(PROJECT_ROOT),
    )
    results = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": len(os.sched_getaffinity(0)),
        "parallel": parallel,
        "one_worker": one_worker,
        "small": small,
        "plain": {
            "wall_seconds": plain.wall_seconds,
            "load_before": plain.load_before,
            "other_cores": plain.other_cores,
            **json.loads(plain.stdout.strip().splitlines()[-1]),
        },
    }
    (PROJECT_ROOT / "bench" / "sweep_results.json").write_text(json.dumps(results, indent=2) + "\n")
    (PROJECT_ROOT / "bench" / "sweep_results.md").write_text(render(results))
    print(render(results))
    return 0


def render(results: dict) -> str:
    parallel, one, plain = results["parallel"], results["one_worker"], results["plain"]
    subflow = "candidates subflow"
    phase_rows = "\n".join(
        f"| {name} | {parallel['phases'][name]:.1f} | {one['phases'][name]:.1f} |" for name in parallel["phases"]
    )
    rows = "\n".join(
        f"| {a['candidate']} | {a['learning_rate']} | {a['batch_size']} | {a['epochs_run']} | "
        f"{a['train_seconds']:.1f} | {b['train_seconds']:.1f} | {c['fit_seconds']:.1f} |"
        for a, b, c in zip(parallel["candidates"], one["candidates"], plain["runs"], strict=True)
    )
    fits = [
        sum(c["train_seconds"] for c in parallel["candidates"]),
        sum(c["train_seconds"] for c in one["candidates"]),
        sum(run["fit_seconds"] for run in plain["runs"]),
    ]
    return f"""# Benchmark: a sweep on 2 Dask worker processes vs the same 4 trainings one after another

`python bench/sweep.py` on {results["when"]}, {results["cores"]} cores, one run of each case, in this order.

| case | wall time (s) | load (1 min) at start | other processes' CPU (cores) |
| --- | --- | --- | --- |
| A. `mnist-pipeline sweep {" ".join(GRID)} --max-parallel {WORKERS}`: {WORKERS} worker processes, TensorFlow 1 thread each | {parallel["wall_seconds"]:.1f} | {parallel["load_before"]:.2f} | {parallel["other_cores"]:.2f} |
| B. the same with `--max-parallel 1`: one worker process trains the 4 one after another, TensorFlow {WORKERS} threads | {one["wall_seconds"]:.1f} | {one["load_before"]:.2f} | {one["other_cores"]:.2f} |
| C. no Prefect, no Dask: import TensorFlow, then the same 4 `fit` calls in one process, {WORKERS} threads | {plain["wall_seconds"]:.1f} | {plain["load_before"]:.2f} | {plain["other_cores"]:.2f} |

| speedup of A | x |
| --- | --- |
| **end to end, over B** (same command, one worker) | **{one["wall_seconds"] / parallel["wall_seconds"]:.2f}** |
| **training phase, over B** (candidates subflow: cluster start, trainings, cluster close) | **{one["phases"][subflow] / parallel["phases"][subflow]:.2f}** |
| end to end, over C (which skips the server, the cluster, evaluation and registration) | {plain["wall_seconds"] / parallel["wall_seconds"]:.2f} |

Where the sweeps' time went (seconds, from their logs):

| phase | A ({WORKERS} workers) | B (1 worker) |
| --- | --- | --- |
{phase_rows}

The four `fit` calls took {fits[0]:.1f} s in all in A ({fits[0] / WORKERS:.1f} s per worker), {fits[1]:.1f} s in B
and {fits[2]:.1f} s in C (after {plain["import_seconds"]:.1f} s importing TensorFlow):

| candidate | learning rate | batch | epochs run | fit s, A (1 thread) | fit s, B (2 threads) | fit s, C (2 threads) |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

{_small(results["small"])}

Selected: {parallel["selected"]} in A, {one["selected"]} in B. Peak memory (all processes): A
{parallel["peak_tree_rss_bytes"] / 2**30:.1f} GiB, B {one["peak_tree_rss_bytes"] / 2**30:.1f} GiB. Sweep A printed:

```
{parallel["output"].rstrip()}
```
"""


def _small(small: dict) -> str:
    """The same comparison for a model too small to keep 2 cores busy with one training."""
    a, b = small["parallel"], small["one_worker"]
    fits = [sum(c["train_seconds"] for c in case["candidates"]) for case in (a, b)]
    subflow = "candidates subflow"
    return f"""The same two sweeps of the tutorial's model, `{" ".join(SMALL_GRID)}` (5 epochs): {WORKERS} workers
{a["wall_seconds"]:.1f} s, 1 worker {b["wall_seconds"]:.1f} s: **{b["wall_seconds"] / a["wall_seconds"]:.2f}x** end to end,
**{b["phases"][subflow] / a["phases"][subflow]:.2f}x** in the candidates subflow ({a["phases"][subflow]:.1f} s vs
{b["phases"][subflow]:.1f} s). Its four `fit` calls took {fits[0]:.1f} s on 1 thread each and {fits[1]:.1f} s on 2
threads. (Load at start
{a["load_before"]:.2f} and {b["load_before"]:.2f}; other processes' CPU {a["other_cores"]:.2f} and {b["other_cores"]:.2f} cores.)"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sequential"]:
        sequential(sys.argv[2])
    else:
        sys.exit(main())
