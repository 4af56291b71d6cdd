"""`mnist-pipeline`: run the pipeline, classify images with a registered model, manage the registry.

    mnist-pipeline run [--preset mlp ...]          the Prefect flow (`python flows/mnist_flow.py` is the same)
    mnist-pipeline sweep --learning-rate 1e-3 4e-3 ...   many trainings in parallel on Dask, the best through the gate
    mnist-pipeline predict FILE... [--json]        classify pictures, .npy arrays or IDX files
    mnist-pipeline registry list|show|promote|rollback|check|repair
    mnist-pipeline serve [--port 8000]             the production model over HTTP, and a page to draw digits on
    mnist-pipeline team up [--folder DIR]          the team setup on this machine, for a try (Ctrl-C stops it)

Prefect and TensorFlow are imported only by the subcommand that needs them, so `--help` and bad
arguments answer at once. Exit codes: 0 done, 1 failed (the message says why), 2 bad arguments,
3 not promoted (the gate refused a `run --fail-if-not-promoted` or a `registry promote`).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import getpass
import os
import sys
import threading

from mnist_pipeline.cli import registry_commands
from mnist_pipeline.cli import run as run_command
from mnist_pipeline.cli import sweep as sweep_command
from mnist_pipeline.cli import serve as serve_command
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.support.quiet_tensorflow import release_stderr
from mnist_pipeline.core.registry import version_name

EXIT_NOT_PROMOTED = run_command.EXIT_NOT_PROMOTED


def _version(text: str) -> str:
    try:
        return version_name(text)
    except PipelineError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _top_k(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= NUM_CLASSES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of classes from 1 to {NUM_CLASSES}")
    return int(text)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container user without a passwd entry)
        return "unknown"


def _artifacts_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts-dir", help="the pipeline's artifacts folder, whose registry/ is used "
                        "(default: $MNIST_ARTIFACTS_DIR or artifacts/)")


def _change_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, help="why; written to the decision log")
    parser.add_argument("--who", default=_user(), help="who decides; written to the decision log (default: %(default)s)")
    _artifacts_option(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-pipeline",
        description="Train MNIST classifiers, use them and manage their registry.",
        epilog="Run `mnist-pipeline COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train, evaluate and register a model (the Prefect flow)",
                              description=run_command.DESCRIPTION)
    run_command.add_arguments(run)
    run.set_defaults(handler=functools.partial(run_command.run, run))

    sweep = commands.add_parser("sweep", help="train several configurations on Dask at once; gate the best one",
                                description=sweep_command.DESCRIPTION)
    sweep_command.add_arguments(sweep)
    sweep.set_defaults(handler=functools.partial(sweep_command.sweep, sweep))

    predict = commands.add_parser(
        "predict", help="classify digit images with the production (or a chosen) model",
        description="Classify handwritten digits. FILEs are pictures (PNG, JPEG, any size or colour mode: laid "
        "out as MNIST's digits are, white on black in 28x28), .npy arrays or MNIST IDX files of 28x28 images "
        "(pixel values 0-255).")
    predict.add_argument("files", nargs="+", metavar="FILE", help="picture, .npy array or IDX file")
    predict.add_argument("--version", type=_version, help="registered version to use: N, vN or v000N "
                         "(default: the production model)")
    predict.add_argument("--top-k", type=_top_k, default=3, help="classes to show per image (default: %(default)s)")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument("--invert", action="store_true", help="the images show dark digits on a light background")
    _artifacts_option(predict)
    predict.set_defaults(handler=_predict)

    registry = commands.add_parser("registry", help="list, inspect, promote or roll back registered models",
                                   description="The model registry: its versions and which one is production.")
    actions = registry.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every version: created, accuracy, interval, status, production")
    _artifacts_option(listing)
    listing.set_defaults(handler=_registry_list)
    show = actions.add_parser("show", help="one version: metrics, parameters, data hash, model card")
    show.add_argument("version", type=_version, metavar="N", help="version: N, vN or v000N")
    _artifacts_option(show)
    show.set_defaults(handler=_registry_show)
    promote = actions.add_parser(
        "promote", help="make a version production, through the gate unless --force",
        description="Make version N production if it passes the promotion gate: its test accuracy reaches "
        "the threshold, every class reaches the per-class floor, and on the same test images no class falls "
        "more than the per-class margin below production's and it is not worse than production (with "
        "--require-significant: significantly better, by an exact McNemar test). Each setting defaults to "
        "the one N was registered with. The decision, either way, goes to the decision log with who and "
        f"why. Exits {EXIT_NOT_PROMOTED} when the gate refuses.")
    promote.add_argument("version", type=_version, metavar="N", help="version: N, vN or v000N")
    promote.add_argument("--force", action="store_true", help="promote even if the gate refuses (logged as forced)")
    registry_commands.add_gate_options(promote)
    _change_options(promote)
    promote.set_defaults(handler=_registry_promote)
    rollback = actions.add_parser("rollback", help="move production back to the previously promoted version",
                                  description="Move production back to the version that was production before "
                                  "the current one (logged with who and why).")
    _change_options(rollback)
    rollback.set_defaults(handler=_registry_rollback)
    check = actions.add_parser("check", help="list every inconsistency in the registry (exit 1 if any)",
                               description="Check the versions' model files, the decision log and the "
                               "production pointer; each problem names its file and the way out.")
    _artifacts_option(check)
    check.set_defaults(handler=_registry_check)
    repair = actions.add_parser(
        "repair", help="make the registry consistent again from its version folders and decision log",
        description="Remove leftovers of interrupted registrations, drop unreadable decision-log lines "
        "(the old log is kept beside it), apply decisions that a dying process did not, and rebuild the "
        "production pointer from the decision log. Version folders are never changed or deleted.")
    _artifacts_option(repair)
    repair.set_defaults(handler=_registry_repair)

    serve = commands.add_parser("serve", help="serve the production model over HTTP, with a page to draw digits on",
                                description=serve_command.DESCRIPTION)
    serve_command.add_arguments(serve)
    serve.set_defaults(handler=serve_command.serve)

    team = commands.add_parser("team", help="team mode on this machine, for a try: PostgreSQL, an S3 store, "
                               "a Prefect server and two workers", description="Team mode on one machine.")
    team_actions = team.add_subparsers(dest="action", required=True, metavar="ACTION")
    team_up = team_actions.add_parser(
        "up", help="start the whole team stack; Ctrl-C stops all of it",
        description="Start PostgreSQL, an S3-compatible server (moto: objects in memory, for tries), a Prefect "
        "server on PostgreSQL that requires an auth string, the work pool, the limits, the results block and the "
        "team-on-demand deployment (run from a git clone at a pinned commit), and two workers, each in a clone of "
        "its own of this repository: every part a process on 127.0.0.1. Prints how to point a client at it (the "
        "secrets go to FOLDER/team.env, mode 0600), then waits; Ctrl-C or SIGTERM stops all of it. Each start "
        "replaces what the previous one left in FOLDER.")
    team_up.add_argument("--folder", default="artifacts/team",
                         help="the stack's folder: databases, clones, logs, team.env (default: %(default)s)")
    team_up.add_argument("--trainings", type=_at_least_one, default=1,
                         help="trainings at once across all workers (default: %(default)s)")
    team_up.add_argument("--worker-limit", type=_at_least_one, default=2,
                         help="flow runs at once per worker (default: %(default)s)")
    team_up.set_defaults(handler=_team_up)
    return parser


def _predict(args: argparse.Namespace) -> int:
    from mnist_pipeline.cli.predict import predict_files

    print(predict_files(args.files, _registry(args), args.version, args.top_k, args.invert, args.json))
    return 0


def _registry(args: argparse.Namespace):
    from mnist_pipeline.core.storage.paths import ArtifactPaths
    from mnist_pipeline.core.registry import open_registry

    paths = ArtifactPaths.resolve(args.artifacts_dir)
    return open_registry(paths.ref(paths.registry), splits_dir=paths.splits)


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def import_from_checkout(package: str) -> None:
    """Make the checkout's `package` importable. Tools that need a git checkout (the team stack clones
    it for its workers) live beside the installed package, not in the wheel; an editable install
    (scripts/setup.sh) has the checkout one folder above `mnist_pipeline`."""
    import sys
    from pathlib import Path

    import mnist_pipeline

    checkout = Path(mnist_pipeline.__file__).resolve().parents[1]
    if not (checkout / package / "__init__.py").is_file():
        raise PipelineError(f"this command runs from a git checkout of the project, not from an installed wheel: "
                            f"clone the repository, run `bash scripts/setup.sh` there and use its .venv/bin/mnist-pipeline")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


def _team_up(args: argparse.Namespace) -> int:
    from pathlib import Path

    import_from_checkout("devstack")
    from devstack.team.stack import up

    return up(Path(args.folder), trainings=args.trainings, worker_limit=args.worker_limit)


def _registry_list(args: argparse.Namespace) -> int:
    from mnist_pipeline.cli.registry_commands import list_versions

    print(list_versions(_registry(args)))
    return 0


def _registry_show(args: argparse.Namespace) -> int:
    from mnist_pipeline.cli.registry_commands import show_version

    print(show_version(_registry(args), args.version))
    return 0


def _registry_promote(args: argparse.Namespace) -> int:
    from mnist_pipeline.cli.registry_commands import promote

    settings = {name: getattr(args, name) for name in registry_commands.GATE_SETTINGS}
    text, promoted = promote(_registry(args), args.version, settings, args.force, args.who, args.reason)
    print(text)
    return 0 if promoted else EXIT_NOT_PROMOTED


def _registry_rollback(args: argparse.Namespace) -> int:
    from mnist_pipeline.cli.registry_commands import rollback

    print(rollback(_registry(args), args.who, args.reason))
    return 0


def _registry_check(args: argparse.Namespace) -> int:
    problems = _registry(args).check()
    print("\n".join(f"problem: {problem}" for problem in problems) if problems else "registry is consistent")
    return 1 if problems else 0


def _registry_repair(args: argparse.Namespace) -> int:
    registry = _registry(args)
    done = registry.repair()
    print("\n".join(done) if done else "nothing to repair")
    remaining = registry.check()
    for problem in remaining:
        print(f"still a problem: {problem}", file=sys.stderr)
    return 1 if remaining else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush fails silently
        return 0


def entry_point(argv: list[str] | None = None) -> None:
    """`mnist-pipeline` as a program: `main`, then exit without tearing down the interpreter.

    The interpreter's own exit first stops threads (Prefect's threads send the last logs and close
    their connections to the server) and then runs the exit handlers (Prefect's stops its temporary
    server); after those, nothing is left to do but free memory, and TensorFlow's teardown alone
    takes over a second. So: the same two steps, then exit. Everything the pipeline writes is
    closed by then (atomic writes).
    """
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    threading._shutdown()  # what Python's exit does first: thread exit hooks, then join the threads
    atexit._run_exitfuncs()
    release_stderr()  # a TensorFlow import still running in the background may be filtering stderr
    os._exit(code)


if __name__ == "__main__":
    entry_point()
