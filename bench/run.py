"""Benchmark the pipeline beside the TensorFlow tutorial, on this machine, in one session.

    python bench/run.py            # every case 3 times; writes bench/results.md and bench/results.json
    python bench/run.py --quick    # smoke check: once each, 1 epoch; writes artifacts/bench-quick/

Cases, each in a fresh process: the tutorial script (bench/tutorial.py) cold and warm; the flow with
the tutorial's model (seed-mlp) cold and warm, with Prefect's temporary server and with a running
server; time to accuracy of cnn and mlp (bench/time_to_accuracy.py); a default run (cnn) for memory
and accuracy. Stage times come from the Prefect server's records of each flow run. Nothing outside a
temporary folder is touched (its own Prefect homes, artifacts and tfds data dirs), and every server
it starts is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench import figures, report  # noqa: E402
from bench.measure import CaseFailed, Measurement, run_case  # noqa: E402
from bench.stages import stage_times  # noqa: E402
from devstack.local_server import LocalPrefect  # noqa: E402
from mnist_pipeline.core.runs.summary import RunSummary  # noqa: E402
from mnist_pipeline.core.support.stats import wilson_interval  # noqa: E402

TARGETS = {"cnn": 0.99, "mlp": 0.975}  # time to accuracy: the validation accuracy each preset must reach


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


class Bench:
    """Runs the cases in a private working folder and collects one record per run."""

    def __init__(self, work: Path, epochs: int | None):
        self.work = work
        self.epochs = epochs  # None: the presets' and the tutorial's own epochs
        self.temp_home = work / "prefect-home-temporary"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MNIST_ARTIFACTS_DIR")},
            "PREFECT_HOME": str(self.temp_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.runs: dict[str, list[dict]] = {}

    def _record(self, case: str, measurement: Measurement, **fields) -> dict:
        record = {
            "wall_seconds": measurement.wall_seconds,
            "started_at": measurement.started_at,
            "peak_rss_bytes": measurement.peak_rss_bytes,
            "peak_tree_rss_bytes": measurement.peak_tree_rss_bytes,
            "load_before": measurement.load_before,
            "other_cores": measurement.other_cores,
            **fields,
        }
        self.runs.setdefault(case, []).append(record)
        _log(
            f"{case}: {measurement.wall_seconds:.1f} s "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in fields.items()
                if v is not None and not isinstance(v, list)
            )
        )
        return record

    def _epochs_args(self) -> list[str]:
        return ["--epochs", str(self.epochs)] if self.epochs else []

    def tutorial(self, case: str, data_dir: Path) -> None:
        measurement = run_case(
            [sys.executable, "bench/tutorial.py", "--data-dir", str(data_dir), *self._epochs_args()],
            self.env,
            str(PROJECT_ROOT),
        )
        result = json.loads(measurement.stdout.strip().splitlines()[-1])
        self._record(case, measurement, test_accuracy=result["test_accuracy"], train_seconds=result["train_seconds"])

    def flow(self, case: str, artifacts: Path, preset: str, api_url: str | None = None, train: bool = True) -> None:
        """One run of the flow. It trains (`--force-retrain`), as the tutorial does, unless `train` is
        False: then an unchanged rerun takes the model from the training cache."""
        env = {**self.env, **({"PREFECT_API_URL": api_url} if api_url else {})}
        summary_file = self.work / f"summary-{case}.json"
        summary_file.unlink(missing_ok=True)
        measurement = run_case(
            [
                sys.executable,
                "flows/mnist_flow.py",
                "--preset",
                preset,
                "--artifacts-dir",
                str(artifacts),
                "--summary-json",
                str(summary_file),
                *self._epochs_args(),
                *(["--force-retrain"] if train else []),
            ],
            env,
            str(PROJECT_ROOT),
        )
        if not summary_file.is_file():
            raise CaseFailed(
                f"the flow run ({case}) wrote no summary:\n{(measurement.stdout + measurement.stderr)[-3000:]}"
            )
        summary = RunSummary.from_json(summary_file.read_text())
        self._record(
            case,
            measurement,
            test_accuracy=summary.accuracy,
            train_seconds=summary.train_seconds,
            flow_run=Path(summary.run_dir).name.rsplit("-", 1)[-1],
            server="running" if api_url else "temporary",
        )

    def time_to_accuracy(self, preset: str, manifest: Path) -> None:
        target = TARGETS[preset]
        measurement = run_case(
            [
                sys.executable,
                "bench/time_to_accuracy.py",
                "--one",
                "--preset",
                preset,
                "--targets",
                str(target),
                "--manifest",
                str(manifest),
                *self._epochs_args(),
            ],
            self.env,
            str(PROJECT_ROOT),
        )
        result = json.loads(measurement.stdout.strip().splitlines()[-1])
        self._record(
            f"tta-{preset}",
            measurement,
            seconds_to_target=result["seconds_to_val"][f"{target:.3f}"],
            final_accuracy=result["test_accuracy"],
            train_seconds=result["train_seconds"],
            per_epoch=result["per_epoch"],
        )

    def prime(self, prefect_home: Path) -> None:
        """Create the Prefect database, so the first measured run does not pay for its migrations."""
        env = {**self.env, "PREFECT_HOME": str(prefect_home)}
        subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "server", "database", "upgrade", "-y"],
            env=env,
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
        )

    def add_stage_times(self, api_url: str, cases: list[str]) -> None:
        records = [record for case in cases for record in self.runs.get(case, [])]
        times = stage_times(api_url, [record["flow_run"] for record in records])
        for record in records:
            flow_run = times[record["flow_run"]]
            record["stages"] = {stage: vars(t) for stage, t in flow_run.stages.items()}
            record["flow_run_started_at"], record["flow_run_ended_at"] = flow_run.started_at, flow_run.ended_at


def _machine() -> dict:
    cpu, flags = "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "bf16_hardware": ", ".join(bf16) if bf16 else "no",
    }


def _git() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def _accuracy_floor(tutorial_runs: list[dict]) -> float:
    median = statistics.median(run["test_accuracy"] for run in tutorial_runs)
    return wilson_interval(round(median * 10_000), 10_000)[0]


def run_all(bench: Bench, repeats: int) -> None:
    work = bench.work
    bench.prime(bench.temp_home)
    for i in range(repeats):  # the tutorial and the flow side by side, so load changes hit both alike
        _log(f"repeat {i + 1} of {repeats}: tutorial and flow (temporary server), cold then warm")
        bench.tutorial("tutorial-cold", work / f"tfds-{i}")
        bench.tutorial("tutorial-warm", work / f"tfds-{i}")
        bench.flow("flow-temp-cold", work / f"artifacts-temp-{i}", "seed-mlp")
        bench.flow("flow-temp-warm", work / f"artifacts-temp-{i}", "seed-mlp")

    _log("starting a Prefect server for the running-server cases")
    server_home = work / "prefect-home-server"
    with LocalPrefect(
        _free_port(),
        prefect_home=server_home,
        log_dir=work / "server-logs",
        extra_env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    ) as server:
        server.start_server()
        for i in range(repeats):
            bench.flow("flow-server-cold", work / f"artifacts-server-{i}", "seed-mlp", server.api_url)
            bench.flow("flow-server-warm", work / f"artifacts-server-{i}", "seed-mlp", server.api_url)
        bench.add_stage_times(server.api_url, ["flow-server-cold", "flow-server-warm"])

    manifest = next((work / "artifacts-temp-0" / "splits").glob("*/manifest.json"))
    for i in range(repeats):
        _log(f"repeat {i + 1} of {repeats}: time to accuracy (cnn, mlp), default run (cnn)")
        for preset in ("cnn", "mlp"):
            bench.time_to_accuracy(preset, manifest)
        bench.flow("default-run", work / "artifacts-temp-0", "cnn")
        bench.flow("default-rerun", work / "artifacts-temp-0", "cnn", train=False)  # nothing changed: cached

    _log("reading the temporary-server runs' stage times (a server on the same Prefect home)")
    with LocalPrefect(
        _free_port(),
        prefect_home=bench.temp_home,
        log_dir=work / "reader-logs",
        extra_env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    ) as reader:
        reader.start_server()
        bench.add_stage_times(reader.api_url, ["flow-temp-cold", "flow-temp-warm", "default-run", "default-rerun"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 run per case, 1 epoch everywhere")
    parser.add_argument("--repeats", type=int, help="runs per case (default: 3, or 1 with --quick)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where results.md/json go (default: bench/, or artifacts/bench-quick/ with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, artifacts) for a look")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    output_dir = args.output_dir or (
        PROJECT_ROOT / "artifacts" / "bench-quick" if args.quick else PROJECT_ROOT / "bench"
    )

    started, started_at, loads = time.monotonic(), datetime.now(UTC), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    bench = Bench(work, epochs=1 if args.quick else None)
    _log(f"benchmark ({'quick' if args.quick else 'full'}, {repeats} run(s) per case) in {work}; load {loads[0]:.2f}")
    try:
        run_all(bench, repeats)
    finally:
        if args.keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    case_loads = [run["load_before"] for runs in bench.runs.values() for run in runs]
    others = [run["other_cores"] for runs in bench.runs.values() for run in runs]
    meta = {
        "command": "python bench/run.py"
        + (" --quick" if args.quick else "")
        + (f" --repeats {args.repeats}" if args.repeats else ""),
        "started": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_seconds": time.monotonic() - started,
        "repeats": repeats,
        "epochs_override": bench.epochs,
        "machine": _machine(),
        "versions": {
            "Python": platform.python_version(),
            **{name: version(name) for name in ("tensorflow", "keras", "tensorflow-datasets", "prefect", "numpy")},
        },
        "git": _git(),
        "load": {
            "min": min(case_loads),
            "median": statistics.median(case_loads),
            "max": max(case_loads),
            "at_start": loads[0],
            "at_end": os.getloadavg()[0],
            "other_cores_median": statistics.median(others),
            "other_cores_max": max(others),
        },
    }
    results = figures.compute(bench.runs, _accuracy_floor(bench.runs["tutorial-cold"] + bench.runs["tutorial-warm"]))
    md_path, json_path = report.write(output_dir, meta, bench.runs, results)
    _log(f"wrote {md_path} and {json_path}")
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
