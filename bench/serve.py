"""Benchmark `mnist-pipeline serve`: 32 clients sending single pictures, with and without micro-batching.

    python -m bench.serve --artifacts-dir DIR     # DIR's registry has the model to serve (train a cnn first:
                                                  # mnist-pipeline run --preset cnn --artifacts-dir DIR)

For each mode the service runs in its own process on a free port of 127.0.0.1 (`--max-batch 1` turns
batching off). The clients are coroutines of this process, each with one keep-alive HTTP/1.1
connection, sending one MNIST test digit as a PNG body (`Content-Type: image/png`), the next request
as soon as the answer is in; a few seconds of warm-up are not counted. Beside them:
`mnist-pipeline predict digit.png`, a process per picture, as a user without the service would run it.

The clients share the machine's cores with the service: the report says how much CPU each used. It
writes bench/serve_results.md (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMMAND = Path(sys.executable).parent / "mnist-pipeline"
TARGET_RPS, TARGET_P99_MS = 1000, 50
MODES = {
    "micro-batching on (defaults: --max-batch 64 --batch-window-ms 2)": (),
    "micro-batching off (--max-batch 1)": ("--max-batch", "1"),
}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    failed: int
    seconds: float
    latencies_ms: list[float]
    server_cores: float  # CPU seconds the service used per second of load
    client_cores: float
    other_cores: float  # what the rest of the machine kept busy meanwhile
    busiest_thread: float  # share of the time the service's busiest thread (the event loop) was on a core

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def digit_pngs(count: int) -> list[bytes]:
    """The first `count` MNIST test digits as PNG files' bytes."""
    import io

    from PIL import Image

    from mnist_pipeline.core.data.pictures import read_inputs
    from mnist_pipeline.core.storage.paths import bundled_mnist_dir

    images = read_inputs(bundled_mnist_dir() / "t10k-images-idx3-ubyte.gz")[:count]
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(artifacts: Path, options: tuple[str, ...], log) -> tuple[subprocess.Popen, int]:
    import urllib.request

    port = free_port()
    process = subprocess.Popen(
        [str(COMMAND), "serve", "--artifacts-dir", str(artifacts), "--port", str(port), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the service did not become ready (see {log.name})")


async def _client(
    port: int, png: bytes, until: float, counted_from: float, latencies: list[float], failures: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n"
    ).encode() + png
    try:
        while (sent := time.perf_counter()) < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if sent >= counted_from:
                latencies.append((time.perf_counter() - sent) * 1000)
                if not head.startswith(b"HTTP/1.1 200"):
                    failures.append(1)
    finally:
        writer.close()


def load(port: int, pngs: list[bytes], clients: int, seconds: float, warm_up: float, server_pid: int) -> LoadResult:
    latencies: list[float] = []
    failures: list[int] = []
    server = psutil.Process(server_pid)

    async def run() -> tuple[float, float, float]:
        start = time.perf_counter()
        counted_from, until = start + warm_up, start + warm_up + seconds
        tasks = [
            asyncio.create_task(_client(port, pngs[i % len(pngs)], until, counted_from, latencies, failures))
            for i in range(clients)
        ]
        await asyncio.sleep(warm_up)
        server_cpu, client_cpu, busy = sum(server.cpu_times()[:2]), time.process_time(), _busy_seconds()
        threads = _thread_seconds(server)
        await asyncio.gather(*tasks)
        threads_after = _thread_seconds(server)
        busiest = max(threads_after[tid] - threads.get(tid, 0.0) for tid in threads_after)
        return (
            time.perf_counter() - counted_from,
            sum(server.cpu_times()[:2]) - server_cpu,
            time.process_time() - client_cpu,
            _busy_seconds() - busy,
            busiest,
        )

    wall, server_cpu, client_cpu, busy, busiest = asyncio.run(run())
    return LoadResult(
        len(latencies),
        len(failures),
        wall,
        latencies,
        server_cpu / wall,
        client_cpu / wall,
        max(0.0, busy - server_cpu - client_cpu) / wall,
        busiest / wall,
    )


def _thread_seconds(process: psutil.Process) -> dict[int, float]:
    return {thread.id: thread.user_time + thread.system_time for thread in process.threads()}


def _busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def predict_per_picture(artifacts: Path, png: bytes, repeats: int) -> list[float]:
    """Wall seconds of `mnist-pipeline predict digit.png`, one process per picture."""
    times = []
    with tempfile.TemporaryDirectory() as folder:
        picture = Path(folder) / "digit.png"
        picture.write_bytes(png)
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(
                [str(COMMAND), "predict", "--artifacts-dir", str(artifacts), str(picture)],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
    return times


def _row(label: str, result: LoadResult) -> str:
    return (
        f"| {label} | {result.per_second:.0f} | {result.percentile(0.5):.1f} | {result.percentile(0.9):.1f} | "
        f"{result.percentile(0.99):.1f} | {max(result.latencies_ms):.1f} | {result.failed} | "
        f"{result.server_cores:.2f} ({result.busiest_thread:.0%}) | {result.client_cores:.2f} | "
        f"{result.other_cores:.2f} |"
    )


def _span(values: list[float], form: str) -> str:
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low}-{high}"


def report(
    rounds: list[dict[str, LoadResult]], predict_seconds: list[float], model: dict, args, load_before: float
) -> str:
    batched = [results[next(iter(MODES))] for results in rounds]
    met = [r.per_second >= TARGET_RPS and r.percentile(0.99) <= TARGET_P99_MS for r in batched]
    quiet = [r for r in batched if r.other_cores < 0.25]
    lines = [
        "# `mnist-pipeline serve` benchmark",
        "",
        f"Made by `python -m bench.serve` ({args.clients} concurrent clients, single PNG pictures, {args.seconds:g} s "
        f"per mode after {args.warm_up:g} s of warm-up, the modes alternating for {len(rounds)} rounds). Model: "
        f"{model['version']} ({model['preset']}, test accuracy {model['test_accuracy']:.4f}).",
        "",
        "CPU cores are CPU seconds per second of load: the service's (in brackets, its busiest thread's share of "
        "one core), the clients' (this process), and every other process's on the machine (other work sharing it).",
        "",
        "| mode, round | requests/s | p50 ms | p90 ms | p99 ms | max ms | failed | CPU cores: service | clients | "
        "other processes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode in MODES:
        lines += [_row(f"{mode}, {number}", results[mode]) for number, results in enumerate(rounds, start=1)]
    median = statistics.median(predict_seconds)
    lines += [
        f"| `mnist-pipeline predict digit.png` (a process per picture, median of {len(predict_seconds)}) | "
        f"{1 / median:.2f} | {median * 1000:.0f} | | | {max(predict_seconds) * 1000:.0f} | 0 | | | |",
        "",
        f"Target (cnn, 2 cores, batching on): >= {TARGET_RPS} requests/s and p99 <= {TARGET_P99_MS} ms: met in "
        f"{sum(met)} of {len(rounds)} rounds; median {statistics.median(r.per_second for r in batched):.0f} "
        f"requests/s, p99 {statistics.median(r.percentile(0.99) for r in batched):.1f} ms"
        + (
            f"; in the {len(quiet)} round(s) where other processes used under 0.25 cores: "
            f"{_span([r.per_second for r in quiet], '.0f')} requests/s, p99 "
            f"{_span([r.percentile(0.99) for r in quiet], '.1f')} ms."
            if quiet
            else "; other processes used at least 0.25 cores in every round."
        ),
        "",
        "What bounds it: one Python interpreter. Every request passes through one thread, uvicorn's event loop "
        "(HTTP parsing in pure Python, routing, laying out the picture, the JSON answer), and the model thread "
        "needs the same GIL for the Python side of each call (TensorFlow releases it only while it computes). "
        "So the service cannot use much more than one core of Python, whatever the cores' number (its CPU and "
        "its busiest thread's share are in the table), and what other processes take from the two cores comes "
        "straight off the figures. Past that: several service processes (uvicorn workers, each with its own "
        "model and batcher) or a faster HTTP layer (httptools, uvloop: not installed here). Batching off, every "
        "request waits for a model call of its own, one at a time. `predict` is bounded by starting a process "
        "that imports TensorFlow and loads the model, for each picture.",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), load average "
        f"{load_before:.2f} before the run; Python {platform.python_version()}, TensorFlow {version('tensorflow')}, "
        f"FastAPI {version('fastapi')}, uvicorn {version('uvicorn')} (its pure-Python h11 protocol and asyncio loop: "
        "httptools and uvloop are not installed).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--artifacts-dir", type=Path, required=True, help="artifacts folder whose production model is served"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warm-up", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--predict-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "serve_results.md")
    args = parser.parse_args()

    from mnist_pipeline.core.registry import open_registry

    registry = open_registry(args.artifacts_dir / "registry")
    production = registry.production()
    if production is None:
        raise SystemExit(f"no production model in {registry.location}: train one first")
    model = {"version": production, **registry.read_version(production)}
    pngs = digit_pngs(args.clients)
    load_before = os.getloadavg()[0]
    rounds = []
    for number in range(1, args.rounds + 1):
        results = {}
        for mode, options in MODES.items():
            with tempfile.NamedTemporaryFile(prefix="serve-bench-", suffix=".log", delete=False) as log:
                process, port = start_service(args.artifacts_dir, options, log)
                try:
                    results[mode] = load(port, pngs, args.clients, args.seconds, args.warm_up, process.pid)
                finally:
                    process.terminate()
                    process.wait(timeout=60)
            print(
                f"round {number}, {mode}: {results[mode].per_second:.0f} requests/s, p99 "
                f"{results[mode].percentile(0.99):.1f} ms",
                flush=True,
            )
        rounds.append(results)
    predict_seconds = predict_per_picture(args.artifacts_dir, pngs[0], args.predict_repeats)
    text = report(rounds, predict_seconds, model, args, load_before)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
