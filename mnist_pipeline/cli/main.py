"""`mnist-pipeline`: run the pipeline, classify images with a registered model, manage the registry.

    mnist-pipeline run [--preset mlp ...]          the Prefect flow (`python flows/mnist_flow.py` is the same)
    mnist-pipeline sweep --learning-rate 1e-3 4e-3 ...   many trainings in parallel on Dask, the best through the gate
    mnist-pipeline predict FILE... [--json]        classify pictures, .npy arrays or IDX files
    mnist-pipeline registry list|show|promote|rollback|check|repair|sync-mlflow
    mnist-pipeline serve [--port 8000]             the production model over HTTP, and a page to draw digits on
    mnist-pipeline corrections list|accept|reject|relabel   review the corrections the service received
    mnist-pipeline team up [--folder DIR]          the team setup on this machine, for a try (Ctrl-C stops it)

One module per command (cli/run.py, sweep.py, predict.py, registry.py, serve.py, corrections.py,
team.py), each adding its sub-parser with `add_parser(subparsers)`: `options.command` ties a command (or
an action of one) to the function that runs it, whose docstring is its help. The options and validators
they share are cli/options.py. Every boolean option is a switch, `--x` / `--no-x`. Prefect and TensorFlow are
imported only by the command that needs them, when it runs, so `--help` and bad arguments answer at once.

Exit codes, the same for every command:
    0  done
    1  failed: `main` prints `error: <what is wrong and what to do>` (a PipelineError; `registry check`
       and `registry repair` also exit 1 while the registry has a problem)
    2  bad arguments or parameters, named in the message; nothing was started
    3  not promoted: `registry promote` refused by the gate, or `run`/`sweep --fail-if-not-promoted`
       whose model is not production afterwards. For CI, "promoted" means "this model is production
       now": a model the gate rejects exits 3, and so does one identical to a registered version
       (verdict unchanged) that is not production; an unchanged model that is production (a re-run of
       a commit already promoted) exits 0.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import faulthandler
import os
import sys
import threading
import time

from mnist_pipeline.cli import corrections, predict, registry, run, serve, sweep, team
from mnist_pipeline.cli.options import EXIT_FAILED, EXIT_NOT_PROMOTED, EXIT_OK
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.support.quiet_tensorflow import release_stderr

__all__ = ["EXIT_NOT_PROMOTED", "build_parser", "entry_point", "main"]

EXIT_DEADLINE_SECONDS = 60.0  # for Prefect's clean-up at exit (the last logs sent, its temporary server stopped)
COMMANDS = (run, sweep, predict, registry, serve, corrections, team)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (the CLI reference in the docs is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="mnist-pipeline",
        description="Train MNIST classifiers, use them and manage their registry.",
        epilog="Run `mnist-pipeline COMMAND --help` for a command's options. Exit codes: 0 done, "
        f"{EXIT_FAILED} failed, 2 bad arguments, {EXIT_NOT_PROMOTED} not promoted.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run the command; its exit code (argparse exits 2 itself on bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except PipelineError as error:  # the one place a failure becomes a message and an exit code
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush fails silently
        return EXIT_OK


def entry_point(argv: list[str] | None = None) -> None:
    """`mnist-pipeline` as a program: `main`, then exit without tearing down the interpreter.

    The interpreter's own exit (`sys.exit`) first stops threads (Prefect's threads send the last logs
    and close their connections to the server) and then runs the exit handlers (Prefect's stops its
    temporary server); after those, nothing is left to do but free memory and finalise modules, and
    with TensorFlow loaded that teardown alone takes 1-2.5 s (measured: `import tensorflow` and one op,
    then `sys.exit` vs `os._exit`: 11.1 s vs 8.7 s on a busy 2-core machine). So: the same two
    steps, then `os._exit`. Everything the pipeline writes is closed by then (atomic writes).

    Why private APIs: Python has no public way to run just those two steps. `threading._shutdown` is
    what `Py_FinalizeEx` calls first: it runs the thread exit hooks (`concurrent.futures` registers its
    executors' shutdown there, through `threading._register_atexit`, so joining the non-daemon threads
    by hand would wait forever for idle pool workers) and joins the threads. `atexit._run_exitfuncs` is
    what it calls next; `atexit` offers no public "run the handlers now". `os._exit` (documented, the
    underscore marks "no clean-up") then skips the teardown. If a future Python drops either private
    function, `getattr` falls back to the plain `sys.exit`: slower, same outcome.
    """
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    shutdown_threads = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    _exit_within(EXIT_DEADLINE_SECONDS, code)
    if shutdown_threads is None or run_exit_handlers is None:
        release_stderr()
        sys.exit(code)
    shutdown_threads()
    run_exit_handlers()
    release_stderr()  # a TensorFlow import still running in the background may be filtering stderr
    os._exit(code)


def _exit_within(seconds: float, code: int) -> None:
    """Arm a watchdog: if the interpreter's exit steps have not ended `seconds` from now, say so (with
    every thread's stack, for a bug report), stop the processes this one started and exit with `code`.

    The work is done and written by then; only Prefect's clean-up is left, and it can wait forever:
    its services drain their queues at exit without a timeout, and a service whose event-loop thread
    died never drains (seen once under heavy load: a run printed its summary, then hung for 20 minutes
    with its temporary Prefect server still running).
    """

    def give_up() -> None:
        time.sleep(seconds)
        import psutil

        print(
            f"warning: the command is done (exit code {code}), but its clean-up at exit (Prefect's: the last "
            f"logs, its temporary server) did not end within {seconds:g} s; stopping it and the processes it "
            "started. Where each thread was:",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        children = psutil.Process().children(recursive=True)  # e.g. Prefect's temporary server
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        for child in psutil.wait_procs(children, timeout=5)[1]:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        os._exit(code)

    threading.Thread(target=give_up, name="exit-deadline", daemon=True).start()


if __name__ == "__main__":
    entry_point()
