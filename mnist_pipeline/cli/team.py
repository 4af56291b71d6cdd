"""`mnist-pipeline team up`: the team setup on this machine, for a try (checkout only).

The stack itself is `devstack/team/stack.py`, beside the package in a git checkout, not in the wheel
(it clones the checkout for its workers): `import_from_checkout` finds it when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_pipeline.cli import options
from mnist_pipeline.core.support.errors import PipelineError

ABOUT = """Team mode on this machine, for a try: PostgreSQL, an S3 store, a Prefect server and two workers."""


def add_parser(subparsers: options.Subparsers) -> None:
    actions = options.actions(subparsers, "team", ABOUT)
    up = options.command(actions, "up", team_up)
    up.add_argument(
        "--folder",
        default="artifacts/team",
        help="the stack's folder: databases, clones, logs, team.env (default: %(default)s)",
    )
    up.add_argument(
        "--trainings",
        type=options.whole_number(1),
        default=1,
        help="trainings at once across all workers (default: %(default)s)",
    )
    up.add_argument(
        "--worker-limit",
        type=options.whole_number(1),
        default=2,
        help="flow runs at once per worker (default: %(default)s)",
    )


def import_from_checkout(package: str) -> None:
    """Make the checkout's `package` importable. Tools that need a git checkout (the team stack clones
    it for its workers) live beside the installed package, not in the wheel; an editable install
    (scripts/setup.sh) has the checkout one folder above `mnist_pipeline`."""
    import mnist_pipeline

    checkout = Path(mnist_pipeline.__file__).resolve().parents[1]
    if not (checkout / package / "__init__.py").is_file():
        raise PipelineError(
            "this command runs from a git checkout of the project, not from an installed wheel: "
            "clone the repository, run `bash scripts/setup.sh` there and use its "
            ".venv/bin/mnist-pipeline"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))


def team_up(args: argparse.Namespace) -> int:
    """Start the whole team stack; Ctrl-C stops all of it.

    PostgreSQL, an S3-compatible server (moto: objects in memory, for tries), a Prefect server on
    PostgreSQL that requires an auth string, the work pool, the limits, the results block and the
    team-on-demand deployment (run from a git clone at a pinned commit), and two workers, each in a clone
    of its own of this repository: every part a process on 127.0.0.1. It prints how to point a client at
    it (the secrets go to FOLDER/team.env, mode 0600), then waits; Ctrl-C or SIGTERM stops all of it.
    Each start replaces what the previous one left in FOLDER.
    """
    import_from_checkout("devstack")
    from devstack.team.stack import up

    code: int = up(Path(args.folder), trainings=args.trainings, worker_limit=args.worker_limit)
    return code
