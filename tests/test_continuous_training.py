"""Continuous training on a real Prefect server: corrections wait for a person's review, the nightly
change check emits an event only when the reviewed data changed since the production model, and the
retrain-on-change deployment's trigger starts one training run on that event.

The deployments are prefect.yaml's, with the shared data parameters pointed at this test's review
queue (training reads its reviewed/) and artifacts folder, and the retraining made small (seed-mlp,
one epoch). The review is resumed through Prefect's API with input, as the UI's Resume form sends it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devstack.local_server import NIGHTLY_CHECK, PROJECT_ROOT, RETRAIN_ON_CHANGE
from mnist_pipeline.core.data.review import open_queue
from mnist_pipeline.core.registry import open_registry
from support.pictures import hand_made_zero, png_bytes
from support.polling import wait_until
from support.servers import client_of, local_prefect

pytestmark = pytest.mark.slow

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
REVIEW = "mnist-review-corrections/review-corrections"
SMALL_RETRAINING = {"preset": "seed-mlp", "epochs": 1, "threshold": 0.5, "per_class_floor": 0.5}


def prefect_file_for(corrections: Path, artifacts: Path, destination: Path) -> Path:
    """prefect.yaml with its shared data parameters set to the reviewed pictures of `corrections` and to
    `artifacts`, the review on `corrections`, and the retraining small."""
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    for line, value in (
        ("    extra_data: null\n", f"    extra_data: {corrections / 'reviewed'}\n"),
        ("      corrections_dir: null\n", f"      corrections_dir: {corrections}\n"),
        ("    artifacts_dir: null\n", f"    artifacts_dir: {artifacts}\n"),
        (
            "    parameters: *data\n    triggers:",
            f"    parameters: {{<<: *data, {', '.join(f'{k}: {v}' for k, v in SMALL_RETRAINING.items())}}}\n"
            "    triggers:",
        ),
    ):
        assert text.count(line) == 1, line
        text = text.replace(line, value)
    destination.write_text(text)
    return destination


@pytest.fixture(scope="module")
def setup(tmp_path_factory, prefect_server, prefect_database):
    """A review queue with one accepted picture, and a registry whose production model was trained on
    it (in this process, on the session's server); then a server of its own with the deployments and a
    worker."""
    from mnist_pipeline.flows.mnist_flow import mnist_pipeline

    root = tmp_path_factory.mktemp("continuous")
    corrections, artifacts = root / "corrections", root / "artifacts"
    queue = open_queue(corrections)
    first, _ = queue.submit(png_bytes(hand_made_zero()), 0)
    queue.decide(first, "accept", "setup", via="test")
    summary = mnist_pipeline(**SMALL_RETRAINING, extra_data=queue.reviewed_location, artifacts_dir=str(artifacts))
    assert summary.promoted, summary
    prefect_file = prefect_file_for(corrections, artifacts, root / "prefect.yaml")
    with local_prefect(root / "prefect-home", prefect_database, prefect_file) as local, client_of(local) as client:
        yield local, client, queue, artifacts


def run_check(client):
    from prefect.deployments import run_deployment

    return settled(client, run_deployment(NIGHTLY_CHECK, timeout=0).id, FINAL_STATES, timeout=300)


def settled(client, flow_run_id, states, timeout: float):
    return wait_until(
        lambda: client.read_flow_run(flow_run_id),
        lambda run: run.state is not None and run.state.type.value in states,
        timeout=timeout,
        interval=2,
    )


def retrain_runs(client) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(RETRAIN_ON_CHANGE)
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


@pytest.mark.needs_chromium
def test_pending_corrections_train_nothing_until_reviewed_then_one_training(setup, tmp_path):
    from prefect.deployments import run_deployment

    local, client, queue, artifacts = setup
    pictures = [png_bytes(np.roll(hand_made_zero(13.0), shift, axis=1)) for shift in range(6)]
    for png in pictures:
        queue.submit(png, 7, client="10.0.0.7", model_version="v0001", model_top=[(1, 0.8), (7, 0.15), (4, 0.05)])
    unchanged = run_check(client)  # six pending corrections: nothing a person accepted yet
    assert (unchanged.state.type.value, unchanged.state.name) == ("COMPLETED", "Unchanged"), unchanged.state

    review = settled(client, run_deployment(REVIEW, timeout=0).id, FINAL_STATES | {"PAUSED"}, timeout=300)
    assert review.state.type.value == "PAUSED", review.state
    screenshot = tmp_path / "review-form.png"
    shown = screenshot_resume_form(local.api_url.removesuffix("/api"), review.id, screenshot)
    assert shown >= 6, f"the Resume form shows {shown} pictures (see {screenshot})"
    a, b, c, *rest = queue.pending()
    answer = {"reviewer": "ada", "reason": "checked by eye", "rest": "reject"}
    answer |= {f"c_{a.id}": "accept", f"c_{b.id}": "accept", f"c_{c.id}": "relabel as 1"}
    assert client.resume_flow_run(review.id, run_input=answer).status.value == "ACCEPT"
    reviewed = settled(client, review.id, FINAL_STATES, timeout=120)
    assert (reviewed.state.name, reviewed.state.message) == (
        "Reviewed",
        "accepted 2, relabelled 1, rejected 3, left 0 pending",
    ), reviewed.state
    assert queue.pending() == []
    assert sorted(queue.files.names("reviewed")) == sorted(
        [f"reviewed/0/{queue.log()[0]['correction']['sha256'][:16]}.png"]
        + [f"reviewed/7/{x.sha256[:16]}.png" for x in (a, b)]
        + [f"reviewed/1/{c.sha256[:16]}.png"]
    )
    assert sorted(name for name in queue.files.names("rejected") if name.endswith(".png")) == sorted(
        f"rejected/{x.id}.png" for x in rest
    )
    decisions = {entry["id"]: entry for entry in queue.log()[1:]}
    assert {i: (e["action"], e["label"]) for i, e in decisions.items()} == {
        a.id: ("accept", 7),
        b.id: ("accept", 7),
        c.id: ("relabel", 1),
        **{x.id: ("reject", None) for x in rest},
    }
    assert all(e["reviewer"] == "ada" and e["reason"] == "checked by eye" for e in decisions.values())
    assert all(str(review.id) in e["via"] for e in decisions.values())

    changed = run_check(client)
    assert (changed.state.type.value, changed.state.name) == ("COMPLETED", "Changed"), changed.state
    [retraining] = wait_until(lambda: retrain_runs(client), bool, timeout=120, interval=2)
    finished = wait_until(
        lambda: client.read_flow_run(retraining.id),
        lambda run: run.state is not None and run.state.type.value in FINAL_STATES,
        timeout=900,
        interval=2,
    )
    assert finished.state.type.value == "COMPLETED", finished.state
    # one training in all: the check that found no change started none (its event would be older)
    assert [run.id for run in retrain_runs(client)] == [retraining.id]
    registry = open_registry(artifacts / "registry")
    newest = registry.versions()[-1]
    assert newest == "v0002" and registry.read_json(newest, "params.json")["extra_pictures"] == 4
    assert json.loads((registry.version_dir(newest) / "version.json").read_text())["flow_run_id"] == str(retraining.id)


def test_a_review_nobody_answers_leaves_everything_pending(prefect_server, tmp_path):
    from mnist_pipeline.flows.review_flow import review_corrections

    queue = open_queue(tmp_path / "corrections")
    queue.submit(png_bytes(hand_made_zero()), 3)
    state = review_corrections(corrections_dir=str(queue.location), timeout_seconds=2, return_state=True)
    # Two ends race, each saying why: the flow's own Failed state once its pause times out, or the
    # server's refusal of that state when the pause's deadline has passed by the server's clock
    # ("The flow was paused and never resumed.", Prefect's core policy), whichever comes first.
    said = ("nobody reviewed within 2 s: all 1 corrections stay pending", "never resumed")
    assert state.type.value == "FAILED" and any(words in state.message for words in said), state
    assert len(queue.pending()) == 1 and queue.files.names("reviewed") == [] and queue.log() == []


def screenshot_resume_form(ui_url: str, flow_run_id, path: Path) -> int:
    """The paused run's page in Prefect's UI, in headless chromium: open its Resume form, save a
    screenshot to `path`; how many pictures (data URIs) the form shows."""
    from playwright.sync_api import sync_playwright
    from test_serve_page import chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{ui_url}/runs/flow-run/{flow_run_id}")
            page.get_by_role("button", name="Resume").first.click(timeout=60_000)
            pictures = page.locator('img[src^="data:image/png"]')
            pictures.first.wait_for(timeout=60_000)
            page.screenshot(path=str(path), full_page=True)
            return pictures.count()
        finally:
            browser.close()
