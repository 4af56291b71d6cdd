"""The review of corrections in Prefect's UI: no picture trains a model before a person looked at it.

    collect the pending corrections -> pause for a reviewer's decisions -> carry them out

The run pauses with a form (Prefect's Resume button): each picture is shown inline (data URIs, in the
form's description and in a markdown artifact) with the label its sender gave and the model's top-3,
and a choice per picture (leave pending, accept, reject, relabel as 0-9), one for the rest at once,
and the reviewer's name and reason, which go to the review log. Accepted and relabelled pictures move
into `<corrections>/reviewed/`, which the nightly change check watches (deployment `review-corrections`).
A review nobody answers within `timeout_seconds` fails the run and leaves everything pending.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import pydantic
from prefect import State, flow, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed

from mnist_pipeline.core.data.review import Action, Correction, CorrectionQueue, open_queue, queue_location

Choice = Literal[
    "leave pending",
    "accept",
    "reject",
    "relabel as 0",
    "relabel as 1",
    "relabel as 2",
    "relabel as 3",
    "relabel as 4",
    "relabel as 5",
    "relabel as 6",
    "relabel as 7",
    "relabel as 8",
    "relabel as 9",
]
Rest = Literal["leave pending", "accept", "reject"]
DECISIONS: dict[str, tuple[Action, int | None]] = {
    "accept": ("accept", None),
    "reject": ("reject", None),
    **{f"relabel as {label}": ("relabel", label) for label in range(10)},
}
SHOWN_SIZE = 112  # pixels a 28x28 picture is shown at (4x, nearest neighbour: every pixel visible)
POLL_SECONDS = 3  # how often the paused run asks the server whether it was resumed


@flow(name="mnist-review-corrections", log_prints=True)
def review_corrections(
    corrections_dir: str | None = None,
    artifacts_dir: str | None = None,
    limit: int = 50,
    timeout_seconds: int = 86_400,
) -> State:
    """Pause for a person to accept, relabel or reject the corrections waiting for review.

    Args:
        corrections_dir: the review queue, a folder or a store URL (default: corrections/ of the artifacts).
        artifacts_dir: the pipeline's artifacts folder or store URL (default: $MNIST_ARTIFACTS_DIR or artifacts/).
        limit: at most this many corrections in one review, oldest first.
        timeout_seconds: how long the run waits for the reviewer; then it fails and everything stays pending.
    """
    queue = open_queue(queue_location(corrections_dir, artifacts_dir))
    pending = queue.pending()[:limit]
    if not pending:
        return Completed(name="Nothing to review", message=f"no correction is waiting in {queue.location}")
    page = review_page(queue, pending)
    create_markdown_artifact(page, key="corrections-review", description="the corrections waiting for review")
    try:
        answer = pause_flow_run(
            wait_for_input=review_form(pending, page),
            timeout=timeout_seconds,
            poll_interval=max(1, min(POLL_SECONDS, timeout_seconds // 2)),
        )
    except FlowPauseTimeout:  # the server words the end state itself: "The flow was not reviewed and never resumed."
        why = f"nobody reviewed within {timeout_seconds} s: all {len(pending)} corrections stay pending"
        get_run_logger().warning(why)
        return Failed(name="Not reviewed", message=why)
    return carry_out(queue, pending, answer.model_dump())


def review_form(pending: list[Correction], page: str) -> type[RunInput]:
    """The Resume form: the reviewer, a reason, a choice per picture and one for the rest."""
    fields: dict[str, Any] = {
        "reviewer": (str, pydantic.Field(min_length=1, description="who decides (written to the review log)")),
        "reason": (str, pydantic.Field("", description="why (written to the review log)")),
        "rest": (
            Rest,
            pydantic.Field("leave pending", description="what happens to each picture left at 'leave pending'"),
        ),
    }
    for number, correction in enumerate(pending, 1):
        fields[f"c_{correction.id}"] = (
            Choice,
            pydantic.Field(
                "leave pending", title=f"#{number}: given {correction.label}, model read {_read(correction)}"
            ),
        )
    form: type[RunInput] = pydantic.create_model("ReviewCorrections", __base__=RunInput, **fields)
    form._description = page  # Prefect shows it above the form
    return form


def carry_out(queue: CorrectionQueue, pending: list[Correction], answer: dict[str, Any]) -> State:
    """Each decision, through the queue (as `mnist-pipeline corrections` does); the counts as the end state."""
    context = get_run_context()
    via = f"prefect flow run {context.flow_run.name} ({context.flow_run.id})"  # type: ignore[union-attr]
    counts = {"accept": 0, "relabel": 0, "reject": 0}
    for correction in pending:
        choice = answer[f"c_{correction.id}"]
        choice = answer["rest"] if choice == "leave pending" else choice
        if choice == "leave pending":
            continue
        action, label = DECISIONS[choice]
        queue.decide(correction, action, answer["reviewer"], answer["reason"], label=label, via=via)
        counts[action] += 1
    left = len(pending) - sum(counts.values())
    summary = (
        f"accepted {counts['accept']}, relabelled {counts['relabel']}, rejected {counts['reject']}, left {left} pending"
    )
    get_run_logger().info("%s (by %s): %s", summary, answer["reviewer"], answer["reason"] or "no reason given")
    return Completed(name="Reviewed", message=summary)


def review_page(queue: CorrectionQueue, pending: list[Correction]) -> str:
    """Markdown: each picture inline (a data URI) with the label given, the model's top-3, sender, time."""
    rows = [
        f"| #{number} | ![#{number}]({_data_uri(queue.picture(correction))}) | **{correction.label}** | "
        f"{_read(correction)} | {correction.model_version or '-'} | {correction.client or '-'} | "
        f"{correction.received} | `{correction.id}` |"
        for number, correction in enumerate(pending, 1)
    ]
    return "\n".join(
        [
            f"## {len(pending)} corrections waiting for review",
            "",
            f"Accepted pictures go to `{queue.reviewed_location}`, which training reads; rejected ones are kept "
            "for audit. Choose per picture below (or for the rest at once), then Resume.",
            "",
            "| # | picture | label given | model read (top 3) | model | from | received | id |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


def _read(correction: Correction) -> str:
    return ", ".join(f"{c} ({p:.0%})" for c, p in correction.model_top) or "not read"


def _data_uri(png: bytes) -> str:
    from PIL import Image

    shown = io.BytesIO()
    Image.open(io.BytesIO(png)).resize((SHOWN_SIZE, SHOWN_SIZE), Image.Resampling.NEAREST).save(shown, format="PNG")
    return "data:image/png;base64," + base64.b64encode(shown.getvalue()).decode("ascii")
