"""Benchmark `mnist-pipeline serve` and `predict`: the light model (LiteRT) side by side with Keras.

    python -m bench.serve --artifacts-dir DIR     # DIR's registry has the model to serve (train a cnn first:
                                                  # mnist-pipeline run --preset cnn --artifacts-dir DIR)

The load comes from `wrk` (or `--generator hey`; both Debian packages, not Python, so they do not
share the service's interpreter): 32 connections posting one MNIST test digit as a PNG body,
`--seconds` per round after a short warm-up, the paths alternating for `--rounds` rounds. wrk is the
default because it takes less of the two cores the service runs on: against the same service, `hey`
used about three times the CPU per request (bench/serve_results.md). The Keras path is the same model
from a copy of the artifacts whose production version has its light model taken away (as a version
registered before light models, or whose conversion was refused, is served). The HTTP stack alone
(bench/http_ceiling.py: uvicorn with the same settings answering without a model) is the ceiling the
service's figures are read against; the load generator's own CPU time is written down too, as it
shares the cores. For each service process: time from start to ready, resident memory after the load. Beside
them: `mnist-pipeline predict digit.png`, a fresh process per picture, on each path.

The machine's load average is written down with the figures: on a shared machine they are depressed.
Writes bench/serve_results.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import psutil

from bench.machine import cpu_description

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMMAND = Path(sys.executable).parent / "mnist-pipeline"
PATHS = {  # what is measured: (which artifacts, service processes)
    "light (LiteRT), 1 process": ("light", 1),
    "light (LiteRT), --workers 2": ("light", 2),
    "Keras, 1 process": ("keras", 1),
    "HTTP stack alone (no model), 2 processes": ("none", 2),
}
TARGET_RPS, TARGET_P99_MS, TARGET_PREDICT_S, TARGET_RSS_MB, TARGET_READY_S = 3000, 25, 0.5, 300, 2.0


@dataclass(frozen=True)
class Round:
    path: str
    per_second: float
    p50_ms: float
    p99_ms: float
    failed: int
    ready_s: float
    rss_mb: float
    generator_cores: float  # CPU time the load generator used, per second of the round


@dataclass(frozen=True)
class Load:
    per_second: float
    p50_ms: float
    p99_ms: float
    failed: int  # answers other than 200, and requests that got no answer


def digit_png(folder: Path) -> Path:
    """One MNIST test digit as a PNG file."""
    from PIL import Image

    from mnist_pipeline.core.data.mnist import read_bundle
    from mnist_pipeline.core.storage.paths import bundled_mnist_dir

    path = folder / "digit.png"
    Image.fromarray(read_bundle(bundled_mnist_dir())["test"][0][0]).save(path)
    return path


def keras_copy(artifacts: Path, folder: Path) -> Path:
    """A copy of `artifacts` whose production version has no light model: served by Keras."""
    copy = folder / "keras-artifacts"
    shutil.copytree(artifacts / "registry", copy / "registry")
    production = json.loads((copy / "registry" / "production.json").read_text())["version"]
    record_path = copy / "registry" / "versions" / production / "version.json"
    record = json.loads(record_path.read_text())
    record.pop("light_model", None)
    record_path.write_text(json.dumps(record))
    for name in ("model.tflite", "light_model.json"):
        (record_path.parent / name).unlink(missing_ok=True)
    return copy


def serve(artifacts: Path | None, port: int, workers: int, log: Path) -> tuple[subprocess.Popen, float]:
    """The service on `port` (without artifacts: bench/http_ceiling.py's app on the same uvicorn), and
    the seconds it took to answer /readyz with 200."""
    if artifacts is None:
        command = [sys.executable, "-m", "uvicorn", "bench.http_ceiling:app", "--lifespan", "off", "--no-access-log"]
        command += ["--http", "httptools", "--loop", "uvloop", "--port", str(port), "--workers", str(workers)]
    else:
        command = [str(COMMAND), "serve", "--artifacts-dir", str(artifacts), "--port", str(port)]
        command += ["--workers", str(workers)]
    start = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while time.monotonic() - start < 120:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process, time.monotonic() - start
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"the service did not get ready: {log.read_text()[-2000:]}")


def hey(port: int, png: Path, seconds: float, connections: int) -> Load:
    """`hey` posting `png`."""
    result = subprocess.run(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(connections),
            "-m",
            "POST",
            "-T",
            "image/png",
            "-D",
            str(png),
            f"http://127.0.0.1:{port}/v1/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = float(re.search(r"50%+ in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    p99 = float(re.search(r"99%+ in ([\d.]+) secs", out).group(1)) * 1000  # type: ignore[union-attr]
    codes = {int(code): int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    failed = sum(n for code, n in codes.items() if code != 200)
    if "Error distribution:" in out:  # requests that got no answer at all
        failed += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", out.split("Error distribution:")[1], re.M))
    return Load(rate, p50, p99, failed)


WRK_SCRIPT = """local f = assert(io.open({path}, "rb"))
wrk.method, wrk.body, wrk.headers["Content-Type"] = "POST", f:read("*all"), "image/png"
f:close()
"""
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(port: int, png: Path, seconds: float, connections: int) -> Load:
    """`wrk` (two threads, one per core) posting `png`."""
    script = png.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(path=json.dumps(str(png))))  # a JSON string is a Lua string too
    url = f"http://127.0.0.1:{port}/v1/predict"
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def latency_ms(percent: int) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * WRK_UNITS_MS[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    not_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(not_ok.group(1)) if not_ok else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return Load(rate, latency_ms(50), latency_ms(99), failed)


GENERATORS = {"wrk": wrk, "hey": hey}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def predict_wall(artifacts: Path, png: Path, repeats: int) -> list[float]:
    walls = []
    for _ in range(repeats):
        start = time.monotonic()
        subprocess.run(
            [str(COMMAND), "predict", str(png), "--artifacts-dir", str(artifacts)], check=True, capture_output=True
        )
        walls.append(time.monotonic() - start)
    return walls


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the children waited for: each hey run
    return usage.ru_utime + usage.ru_stime


def run_round(
    path: str, artifacts: Path | None, workers: int, png: Path, seconds: float, folder: Path, generator: str
) -> Round:
    port = free_port()
    process, ready = serve(artifacts, port, workers, folder / "service.log")
    load = GENERATORS[generator]
    try:
        load(port, png, 2, 32)  # warm-up
        cpu_before = children_cpu_seconds()
        result = load(port, png, seconds, 32)
        generator_cores = (children_cpu_seconds() - cpu_before) / seconds
        service = psutil.Process(process.pid)
        rss = max(p.memory_info().rss for p in [service, *service.children()]) / 1e6  # the largest process
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
    return Round(path, result.per_second, result.p50_ms, result.p99_ms, result.failed, ready, rss, generator_cores)


def report(
    rounds: list[Round], predicts: dict[str, list[float]], load_before: str, load_after: str, model: str, generator: str
) -> str:
    rows = [
        f"| {r.path}, round {1 + i // len(PATHS)} | {r.per_second:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.failed} | {r.ready_s:.2f} | {r.rss_mb:.0f} | {r.generator_cores:.2f} |"
        for i, r in enumerate(rounds)
    ]
    light = [r for r in rounds if r.path.startswith("light")]
    best = max(light, key=lambda r: r.per_second)
    lines = [
        "# `mnist-pipeline serve` benchmark: the light model (LiteRT) beside Keras",
        "",
        f"Made by `python -m bench.serve`: `{generator}` with 32 connections posting one MNIST test digit as a PNG to "
        f"`/v1/predict`, the paths alternating. Model: {model}. uvicorn with httptools and uvloop, micro-batching on "
        f"(--max-batch 64, no batch window: the defaults). Resident memory: of the largest service process. {generator}'s "
        f"cores: the CPU time `{generator}` itself used per second, on the same 2 cores. The HTTP stack alone: uvicorn, with the same "
        "settings, answering a fixed answer of the same size without reading the picture (bench/http_ceiling.py): "
        "the most a service on this stack answers here under the same load.",
        "",
        f"| path, round | requests/s | p50 ms | p99 ms | failed | ready after s | resident MB | {generator}'s cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "| `mnist-pipeline predict digit.png` (a fresh process) | median s | min s |",
        "| --- | --- | --- |",
        *(f"| {path} | {statistics.median(w):.2f} | {min(w):.2f} |" for path, w in predicts.items()),
        "",
        f"Targets: >= {TARGET_RPS} requests/s with p99 <= {TARGET_P99_MS} ms (light, best round: {best.per_second:.0f}/s, "
        f"p99 {best.p99_ms:.1f} ms); predict <= {TARGET_PREDICT_S} s (light: {statistics.median(predicts['light (LiteRT)']):.2f} s); "
        f"<= {TARGET_RSS_MB} MB resident and ready <= {TARGET_READY_S} s (light: {max(r.rss_mb for r in light):.0f} MB, "
        f"{max(r.ready_s for r in light):.2f} s).",
        "",
        f"Machine: {cpu_description()}, shared with other work: load average "
        f"{load_before} before the run, {load_after} after. Python {platform.python_version()}, ai-edge-litert "
        f"{version('ai-edge-litert')}, TensorFlow {version('tensorflow')}, uvicorn {version('uvicorn')}, "
        f"httptools {version('httptools')}, uvloop {version('uvloop')}, {generator} (Debian).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", required=True, type=Path)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--predict-repeats", type=int, default=5)
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="wrk", help="the load generator")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "serve_results.md")
    args = parser.parse_args()
    if shutil.which(args.generator) is None:
        sys.exit(f"{args.generator} is not installed: apt-get install -y {args.generator}")
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    artifacts = args.artifacts_dir.resolve()
    registry = json.loads((artifacts / "registry" / "production.json").read_text())["version"]
    record = json.loads((artifacts / "registry" / "versions" / registry / "version.json").read_text())
    model = f"{registry} ({record['preset']}, test accuracy {record['test_accuracy']:.4f})"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        png, keras = digit_png(folder), keras_copy(artifacts, folder)
        where = {"light": artifacts, "keras": keras, "none": None}
        rounds = [
            run_round(path, where[kind], workers, png, args.seconds, folder, args.generator)
            for _ in range(args.rounds)
            for path, (kind, workers) in PATHS.items()
        ]
        predicts = {
            label: predict_wall(where[kind], png, args.predict_repeats)
            for label, kind in (("light (LiteRT)", "light"), ("Keras", "keras"))
        }
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    args.out.write_text(report(rounds, predicts, load_before, load_after, model, args.generator))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
