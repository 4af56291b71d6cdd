"""What `run` and `sweep` share around their Prefect flow: starting Prefect for an offline run, a
console without the tracebacks of expected failures, and the summary's exit code and JSON file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mnist_pipeline.cli.options import EXIT_OK, not_promoted_code
from mnist_pipeline.core.runs.summary import RunSummary
from mnist_pipeline.core.support.errors import PipelineError


def prepare_prefect() -> None:
    """Before Prefect loads: the pipeline runs offline, so keep Prefect's temporary server from trying
    to send telemetry, and give it time to start (Prefect's default is 20 s). Its first start in a
    Prefect home creates the database: a minute or more on a busy 2-core machine (bench/ci_results.md);
    a run that fails after that wait has lost it anyway."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")


def hide_pipeline_error_tracebacks() -> None:
    """Once the flow's module is loaded (Prefect sets up its console logging then): keep `PipelineError`
    tracebacks off the console (see `_WithoutTracebacksOf`)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_WithoutTracebacksOf(PipelineError))


class _WithoutTracebacksOf(logging.Filter):
    """Prefect's console log prints the traceback of the exception that ended the flow run. For a
    `PipelineError` the message says what is wrong and what to do, and `main` prints it last as
    `error: ...`, so the console leaves that record out; the Prefect server's log still has it."""

    def __init__(self, error_type: type[BaseException]):
        super().__init__()
        self.error_type = error_type

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], self.error_type))


def finish(summary: RunSummary, summary_json: str | None, fail_if_not_promoted: bool, json_text: str) -> int:
    """Write the summary JSON if asked; the exit code (see `options.not_promoted_code`)."""
    if summary_json:
        Path(summary_json).write_text(json_text + "\n")
    if not fail_if_not_promoted:
        return EXIT_OK
    return not_promoted_code(summary.promoted, summary.verdict, summary.version, summary.production)
