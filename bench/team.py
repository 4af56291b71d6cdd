"""Benchmark: team mode against the embedded default, the same `mlp` run, on this machine.

    python bench/team.py [--repeats 3]   # writes bench/team_results.md and bench/team_results.json

Five cases, each `mnist-pipeline run --preset mlp --force-retrain` against a running Prefect server:
    local      Prefect server on SQLite,     artifacts in a local folder   (the embedded default)
    s3         Prefect server on SQLite,     artifacts in the S3-compatible store (moto)
    postgres   Prefect server on PostgreSQL, artifacts in a local folder
    team       Prefect server on PostgreSQL, artifacts in the S3-compatible store (team mode)
    team-new   as team, on a "new machine": its local mirror of the store emptied before each run, so
               the split and the registry's files are downloaded
Each case first runs once unmeasured (it builds its split, and its store and database warm up); then
the cases take turns, `--repeats` rounds, so that the machine's state is spread evenly over them.
Every server started here (PostgreSQL, moto, both Prefect servers) is stopped by its id.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # `python bench/team.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import run_case  # noqa: E402
from devstack.local_server import LocalPrefect  # noqa: E402
from devstack.team.object_store import MotoS3Server  # noqa: E402
from devstack.team.postgres import PostgresServer  # noqa: E402
from devstack.team.processes import free_port  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRY = str(Path(sys.executable).parent / "mnist-pipeline")
CASES = ("local", "s3", "postgres", "team", "team-new")
TARGET = 1.2  # team mode's wall time over the default's, at most


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


class Servers:
    """PostgreSQL, moto and two Prefect servers (SQLite, PostgreSQL), each stopped by its id."""

    def __init__(self, work: Path):
        self.work = work
        self.postgres = PostgresServer(work / "postgres")
        self.s3 = MotoS3Server(work / "moto.log", cwd=work)
        self.sqlite_prefect = LocalPrefect(free_port(), work / "prefect-sqlite", work / "logs-sqlite")
        self.postgres_prefect: LocalPrefect | None = None

    def __enter__(self) -> Servers:
        try:
            self.postgres.start()
            self.s3.start()
            self.sqlite_prefect.start_server()
            self.postgres_prefect = LocalPrefect(
                free_port(),
                self.work / "prefect-postgres",
                self.work / "logs-postgres",
                extra_env={"PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgres.url},
            )
            self.postgres_prefect.start_server(timeout=240)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        for prefect in (self.postgres_prefect, self.sqlite_prefect):
            if prefect is not None:
                prefect.stop()
        self.s3.stop()
        self.postgres.stop()

    def env(self, case: str) -> dict[str, str]:
        prefect = self.sqlite_prefect if case in ("local", "s3") else self.postgres_prefect
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MNIST_", "PREFECT_"))},
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_HOME": str(self.work / f"home-{case}"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MNIST_CACHE_DIR": str(self.work / f"mirror-{case}"),
        }
        if case != "local" and case != "postgres":
            env.update(self.s3.env(), MNIST_ARTIFACTS_DIR=self.s3.store_url(f"bench-{case}"))
        else:
            env["MNIST_ARTIFACTS_DIR"] = str(self.work / f"artifacts-{case}")
        return env


def run(servers: Servers, case: str) -> dict:
    env = servers.env(case)
    if case == "team-new":
        shutil.rmtree(env["MNIST_CACHE_DIR"], ignore_errors=True)  # a machine that never ran the pipeline
    summary_file = servers.work / f"summary-{case}.json"
    measurement = run_case(
        [ENTRY, "run", "--preset", "mlp", "--force-retrain", "--summary-json", str(summary_file)],
        env,
        str(PROJECT_ROOT),
    )
    summary = json.loads(summary_file.read_text())
    _log(
        f"{case}: {measurement.wall_seconds:.1f} s (training {summary['train_seconds']:.1f} s, "
        f"accuracy {summary['accuracy']:.4f}, other cores busy {measurement.other_cores:.2f})"
    )
    return {
        "wall_seconds": measurement.wall_seconds,
        "train_seconds": summary["train_seconds"],
        "accuracy": summary["accuracy"],
        "other_cores": measurement.other_cores,
        "started_at": measurement.started_at,
    }


def report(results: dict[str, list[dict]], repeats: int) -> str:
    median = {case: statistics.median(r["wall_seconds"] for r in runs) for case, runs in results.items()}
    train = {case: statistics.median(r["train_seconds"] for r in runs) for case, runs in results.items()}
    ratio = median["team"] / median["local"]
    every = {case: ", ".join(format(r["wall_seconds"], ".1f") for r in runs) for case, runs in results.items()}
    rows = "\n".join(
        f"| {case} | {description} | {median[case]:.1f} | {train[case]:.1f} | {median[case] - train[case]:.1f} | "
        f"{median[case] / median['local']:.2f}x | {every[case]} |"
        for case, description in zip(
            CASES,
            (
                "SQLite server, local folder (default)",
                "SQLite server, S3 store",
                "PostgreSQL server, local folder",
                "PostgreSQL server, S3 store (team mode)",
                "team mode, each run on a new machine (empty mirror)",
            ),
            strict=True,
        )
    )
    return f"""# Team mode against the embedded default

`python bench/team.py --repeats {repeats}` on {datetime.now(UTC):%Y-%m-%d} ({os.cpu_count()} cores):
`mnist-pipeline run --preset mlp --force-retrain` against a running Prefect server, the split already
built (each case ran once first), the cases taking turns. S3 is moto's server on 127.0.0.1; a worker
keeps its local mirror of the store between runs, except in team-new. Wall time is the whole command;
"other" is wall minus training.

| case | Prefect server, artifacts | wall s (median) | training s | other s | vs local | every run (s) |
|---|---|---|---|---|---|---|
{rows}

Team mode / local: **{ratio:.2f}x** (target <= {TARGET}x: {"met" if ratio <= TARGET else "not met"}).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    work.chmod(0o755)  # PostgreSQL runs as the user postgres, who must reach its folder
    results: dict[str, list[dict]] = {case: [] for case in CASES}
    try:
        with Servers(work) as servers:
            for case in CASES:
                _log(f"{case}: warm-up run")
                run(servers, case)
            for round_ in range(args.repeats):
                for case in CASES[round_ % len(CASES) :] + CASES[: round_ % len(CASES)]:
                    results[case].append(run(servers, case))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, args.repeats)
    (args.out / "team_results.md").write_text(text)
    (args.out / "team_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
