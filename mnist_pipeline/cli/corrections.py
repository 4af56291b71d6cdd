"""`mnist-pipeline corrections list|accept|reject|relabel`: review the corrections users sent, without
the Prefect UI. The same decisions as the review flow (flows/review_flow.py), by the same code
(`core/data/review.py`): accepted and relabelled pictures move into `<corrections>/reviewed/`, which
training reads; rejected ones into `rejected/`; each decision goes to the review log with who and why.
"""

from __future__ import annotations

import argparse
import json

from mnist_pipeline.cli import options
from mnist_pipeline.core.data.review import CorrectionQueue, open_queue, queue_location

ABOUT = """Review the corrections the service received: list, accept, reject, relabel.

Corrections wait for a person's review before training uses them. Accepted and relabelled pictures move
into <corrections>/reviewed/ (give that folder as --extra-data), rejected ones into rejected/; every
decision is logged with who and why.
"""


def add_parser(subparsers: options.Subparsers) -> None:
    actions = options.actions(subparsers, "corrections", ABOUT)
    listing = options.command(actions, "list", _list)
    options.switch(listing, "log", "list the decisions made instead, oldest first")
    options.switch(listing, "json", "print JSON instead of text")
    _location(listing)
    for action, text in (("accept", "into training data under the label given"), ("reject", "kept for audit only")):
        deciding = options.command(
            actions, action, _decide, f"{action} pending corrections: {text}", shared=(_decision,)
        )
        deciding.add_argument("ids", nargs="+", metavar="ID", help="the correction's id, or its first characters")
    relabel = options.command(
        actions, "relabel", _decide, "accept a pending correction under another label", (_decision,)
    )
    relabel.add_argument("ids", nargs=1, metavar="ID", help="the correction's id, or its first characters")
    relabel.add_argument("label", type=options.whole_number(0, 9), help="the digit the picture really shows")


def _location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corrections-dir", help="the review queue: a folder or a store URL (default: corrections/ of the artifacts)"
    )
    options.artifacts_dir(parser, "whose corrections/ is reviewed")


def _decision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", default="", help="why; written to the review log")
    parser.add_argument(
        "--who", default=options.user(), help="who decides; written to the review log (default: %(default)s)"
    )
    _location(parser)


def _queue(args: argparse.Namespace) -> CorrectionQueue:
    return open_queue(queue_location(args.corrections_dir, args.artifacts_dir))


def _list(args: argparse.Namespace) -> int:
    """The pending corrections (or, with --log, the decisions made)."""
    queue = _queue(args)
    if args.log:
        entries = queue.log()
        if args.json:
            print(json.dumps(entries, indent=2))
        for entry in [] if args.json else entries:
            relabelled = f" as {entry['label']}" if entry["action"] == "relabel" else ""
            print(
                f"{entry['time']}  {entry['id']}  {entry['action']}{relabelled} (given {entry['label_given']}) "
                f"by {entry['reviewer']} via {entry['via']}: {entry['reason'] or '-'}"
            )
        return options.EXIT_OK
    pending = queue.pending()
    if args.json:
        print(json.dumps([correction.to_json() for correction in pending], indent=2))
        return options.EXIT_OK
    for correction in pending:
        read = ", ".join(f"{c} {p:.0%}" for c, p in correction.model_top) or "not read"
        print(
            f"{correction.id}  label {correction.label}  model {correction.model_version or '-'} read {read}  "
            f"from {correction.client or '-'} at {correction.received}"
        )
    print(
        f"{len(pending)} pending in {queue.location}; reviewed pictures (training reads these): {queue.reviewed_location}"
    )
    return options.EXIT_OK


def _decide(args: argparse.Namespace) -> int:
    """Decide on pending corrections.

    Accepted and relabelled pictures move into <corrections>/reviewed/, which training reads; rejected
    ones into rejected/, kept for audit. Each decision goes to the review log with who and why.
    """
    queue = _queue(args)
    chosen = [queue.find(prefix) for prefix in args.ids]  # all found before any is decided
    for correction in chosen:
        entry = queue.decide(
            correction,
            args.action,
            args.who,
            args.reason,
            label=getattr(args, "label", None),
            via="mnist-pipeline corrections",
        )
        label = "" if entry["label"] is None else f" as {entry['label']}"
        print(f"{correction.id}: {entry['action']}{label} -> {entry['stored']}")
    return options.EXIT_OK
