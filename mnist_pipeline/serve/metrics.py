"""The service's Prometheus metrics, at `GET /metrics` (prometheus_client).

    mnist_requests_total{endpoint, status}     requests answered, by route template and status code
    mnist_request_seconds{endpoint}            latency histogram, buckets from 0.5 ms to 2.5 s
    mnist_batch_images                         images per model call (micro-batching's effect)
    mnist_queue_depth                          requests admitted and not yet answered
    mnist_served_version_info{version, runtime}  1 for the model this process serves
    mnist_model_swaps_total, mnist_model_refusals_total   production models swapped in / refused

Several service processes (`serve --workers N`, workers.py) give one view through the client's multiprocess mode:
each process writes its values to files in PROMETHEUS_MULTIPROC_DIR, and `/metrics`, whichever process
answers it, adds them up (gauges: the sum of queue depths; the served version: one series per version,
with the number of processes serving it).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("mnist_requests", "Requests answered", ["endpoint", "status"])
LATENCY = Histogram("mnist_request_seconds", "Time to answer a request", ["endpoint"], buckets=LATENCY_BUCKETS)
BATCH_IMAGES = Histogram("mnist_batch_images", "Images per model call", buckets=BATCH_BUCKETS)
QUEUE_DEPTH = Gauge("mnist_queue_depth", "Requests admitted and not yet answered", multiprocess_mode="livesum")
SERVED = Gauge(
    "mnist_served_version_info",
    "1 for the version this process serves (summed over processes)",
    ["version", "runtime"],
    multiprocess_mode="livesum",
)
SWAPS = Counter("mnist_model_swaps", "Production models swapped in (the first load included)")
REFUSALS = Counter("mnist_model_refusals", "Production models refused (damaged, unloadable)")


def serving(version: str, runtime: str, before: tuple[str, str] | None) -> None:
    """Record that this process now serves `version` on `runtime` (and no longer `before`)."""
    if before is not None:
        SERVED.labels(*before).set(0)  # 0 rather than removed: a removal does not reach multiprocess files
    SERVED.labels(version, runtime).set(1)
    SWAPS.inc()


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type: this process's, or every
    process's in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_DIR):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
