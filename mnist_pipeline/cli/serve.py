"""`mnist-pipeline serve`: the production model over HTTP (uvicorn), with the drawing page at `/`.

The options are checked here, before FastAPI, uvicorn or TensorFlow load; the service itself is
`mnist_pipeline.serve`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from mnist_pipeline.cli import options
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.support.settings import CORRECTIONS_TOKEN

# option: (lowest, highest, default, help); a whole number where the default is one
LIMITS: dict[str, tuple[float, float, float, str]] = {
    "--corrections-max-mb": (1, 1_000_000, 100, "size cap of the corrections waiting for review, in MB"),
    "--corrections-per-minute": (1, 100_000, 30, "corrections one client address may send a minute"),
    "--max-upload-mb": (1, 1000, 10, "largest request body, in MB"),
    "--max-batch": (
        1,
        4096,
        64,
        "images per model call when requests are batched together; 1 turns micro-batching off",
    ),
    "--batch-window-ms": (
        0,
        10_000,
        0.0,
        "how long a batch waits for more requests before it runs; 0: it takes those that queued while the model "
        "ran the last one",
    ),
    "--queue-size": (1, 100_000, 256, "requests admitted at once; more are answered 503 at once"),
    "--poll-seconds": (0.05, 3600, 2.0, "how often the production pointer is read"),
    "--workers": (
        1,
        64,
        1,
        "service processes sharing the port, each with its own model and queue; about one core each "
        "(docs/serving.md: when it pays, and how long two may answer with different versions)",
    ),
}


def add_parser(subparsers: options.Subparsers) -> None:
    parser = options.command(subparsers, "serve", serve)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 for all)",
    )
    parser.add_argument("--port", type=options.whole_number(1, 65535), default=8000, help="port (default: %(default)s)")
    options.artifacts_dir(parser, "whose registry/ is served")
    parser.add_argument(
        "--corrections-dir",
        help="the review queue the page's corrections go to, a folder or a store URL; training reads its "
        "reviewed/ (default: corrections/ in the artifacts folder or store)",
    )
    parser.add_argument(
        "--corrections-token-file",
        metavar="FILE",
        help=f"a file whose first line is the token POST /v1/corrections requires (or ${CORRECTIONS_TOKEN}); "
        "required when --host is not loopback",
    )
    options.switch(
        parser,
        "allow-anonymous-corrections",
        "listen beyond loopback without a corrections token: anyone who reaches the service may queue corrections",
    )
    for flag, (low, high, default, text) in LIMITS.items():
        kind = options.whole_number(int(low), int(high)) if isinstance(default, int) else options.number(low, high)
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    parser.add_argument(
        "--model-name",
        default="mnist",
        help="the model's name in the Open Inference Protocol, /v2/models/NAME (default: %(default)s)",
    )
    options.switch(
        parser, "access-log", "log every request (at a thousand requests a second it costs more than it tells)"
    )


def _quiet_logs() -> None:
    """The service's log lines formatted as uvicorn's; without two warnings that are expected here:
    Pillow's about pictures over 89 megapixels (the service refuses them from 16.8, saying so), and
    TensorFlow's about retracing (each new model's warm-up traces its predict function on purpose)."""
    import warnings

    from PIL import Image
    from uvicorn.logging import DefaultFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
    logger = logging.getLogger("mnist_pipeline.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def serve(args: argparse.Namespace) -> int:
    """Serve the production model over HTTP, with a page to draw digits on.

    POST /v1/predict (pictures or 28x28 arrays), GET /v1/model, /healthz, /readyz, the Open Inference
    Protocol (V2) under /v2, Prometheus metrics at /metrics, the API's documentation at /docs and a page
    to draw digits on at /. The service follows production: when a run, `registry promote` or `registry
    rollback` moves it, the new model is verified and swapped in without stopping.
    """
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # before prometheus_client is imported: every worker's metrics in one view (serve/metrics.py)
        with tempfile.TemporaryDirectory(prefix="mnist-serve-metrics-") as folder:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
            return serve(args)
    import uvicorn

    from mnist_pipeline.core.data.review import queue_location
    from mnist_pipeline.core.storage.paths import ArtifactPaths
    from mnist_pipeline.serve.app import ServeSettings, create_app
    from mnist_pipeline.serve.guard import is_loopback, read_token
    from mnist_pipeline.serve.workers import run_workers

    token = read_token(args.corrections_token_file)
    if token is None and not is_loopback(args.host) and not args.allow_anonymous_corrections:
        print(
            f"error: --host {args.host} lets other machines reach the service, and then POST /v1/corrections "
            f"needs a token: put one in a file given by --corrections-token-file, or in "
            f"${CORRECTIONS_TOKEN}; or say --allow-anonymous-corrections",
            file=sys.stderr,
        )
        return options.EXIT_USAGE
    paths = ArtifactPaths.resolve(args.artifacts_dir)
    settings = ServeSettings(
        registry=paths.ref(paths.registry),
        corrections=queue_location(args.corrections_dir, args.artifacts_dir),
        corrections_max_bytes=args.corrections_max_mb * 1_000_000,
        corrections_token=token,
        corrections_per_minute=args.corrections_per_minute,
        max_upload_bytes=args.max_upload_mb * 1_000_000,
        max_batch=args.max_batch,
        batch_window_seconds=args.batch_window_ms / 1000,
        max_pending=args.queue_size,
        poll_seconds=args.poll_seconds,
        model_name=args.model_name,
    )
    _quiet_logs()
    logging.getLogger("mnist_pipeline.serve").info(
        "serving the production model of %s; corrections wait for review in %s%s",
        settings.registry,
        settings.corrections,
        "" if token else " (no token asked)",
    )
    config = uvicorn.Config(
        "mnist_pipeline.serve.app:create_app",  # replaced by the app itself below (per worker)
        host=args.host,
        port=args.port,
        log_level="info",
        loop="uvloop",  # the fast event loop and HTTP parser (C), not asyncio's and h11's (Python)
        http="httptools",
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    try:
        if args.workers > 1:
            return run_workers(config, lambda: create_app(settings), args.workers)
        config.app = create_app(settings)
        uvicorn.Server(config).run()
    except SystemExit:  # uvicorn exits (code 3) when it cannot start, having logged why, e.g. the port is taken
        raise PipelineError(
            f"the service could not start on {args.host}:{args.port} (see the error above); if "
            "another program uses the port, pick another with --port"
        ) from None
    return 0
