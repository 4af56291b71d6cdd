"""The review queue between corrections and training data (core/data/review.py), in a folder and in a
real S3-compatible store (moto's server), and `mnist-pipeline corrections list|accept|reject|relabel`:
nothing trains until a person accepts it, a decision moves the picture and is logged with who and why,
a repeat is not duplicated, and the extra-data scan refuses the queue itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_pipeline.cli.main import main
from mnist_pipeline.core.data.extra_data import ExtraDataError, scan
from mnist_pipeline.core.data.review import ReviewError, open_queue
from mnist_pipeline.core.storage import store
from support.pictures import hand_made_zero, png_bytes


def pictures(n: int) -> list[bytes]:
    """`n` different 28x28 PNGs."""
    return [png_bytes(np.roll(hand_made_zero(), shift, axis=1)) for shift in range(n)]


@pytest.fixture(params=["folder", "store"])
def location(request, tmp_path) -> str:
    if request.param == "folder":
        return str(tmp_path / "corrections")
    return request.getfixturevalue("s3_env").store_url(f"corrections-{tmp_path.name}")


def reviewed_files(queue) -> list[str]:
    return queue.files.names("reviewed")


def test_corrections_wait_then_decisions_move_them_and_are_logged(location):
    queue = open_queue(location)
    submitted = [
        queue.submit(png, 7, client="10.0.0.9", model_version="v0001", model_top=[(1, 0.9), (7, 0.05)])
        for png in pictures(4)
    ]
    assert all(new for _, new in submitted)
    again, new = queue.submit(pictures(1)[0], 7, client="10.0.0.10")
    assert not new and again.id == submitted[0][0].id  # the same correction again: one pending entry
    pending = queue.pending()
    assert {c.id for c in pending} == {c.id for c, _ in submitted}
    assert len(pending) == 4 and reviewed_files(queue) == []  # nothing trains unreviewed
    assert pending[0].model_top == ((1, 0.9), (7, 0.05)) and pending[0].model_version == "v0001"

    a, b, c, d = pending
    queue.decide(a, "accept", "ada", "a clear 7", via="test")
    queue.decide(b, "relabel", "ada", "it is a 1", label=1, via="test")
    queue.decide(c, "reject", "bob", "scribble", via="test")
    assert [x.id for x in queue.pending()] == [d.id]
    assert reviewed_files(queue) == sorted([f"reviewed/1/{b.sha256[:16]}.png", f"reviewed/7/{a.sha256[:16]}.png"])
    assert queue.files.names("rejected") == [f"rejected/{c.id}.json", f"rejected/{c.id}.png"]
    log = queue.log()
    assert [(e["id"], e["action"], e["label"], e["reviewer"], e["reason"]) for e in log] == [
        (a.id, "accept", 7, "ada", "a clear 7"),
        (b.id, "relabel", 1, "ada", "it is a 1"),
        (c.id, "reject", None, "bob", "scribble"),
    ]
    assert log[0]["correction"]["client"] == "10.0.0.9"

    # the same picture sent and accepted again: one file in reviewed/, a second log entry
    png_of = {correction.id: png for (correction, _), png in zip(submitted, pictures(4), strict=True)}
    again, new = queue.submit(png_of[a.id], 7)
    assert new
    queue.decide(again, "accept", "ada", via="test")
    assert len(reviewed_files(queue)) == 2 and len(queue.log()) == 4


def test_bad_decisions_say_what_is_wrong(tmp_path):
    queue = open_queue(tmp_path / "corrections")
    first, _ = queue.submit(pictures(1)[0], 3)
    with pytest.raises(ReviewError, match="no pending correction has an id starting with 'zz'"):
        queue.find("zz")
    with pytest.raises(ReviewError, match="relabel needs the right label"):
        queue.decide(first, "relabel", "ada", via="test")
    with pytest.raises(ReviewError, match="who decided"):
        queue.decide(first, "accept", " ", via="test")
    with pytest.raises(ReviewError, match="not a digit"):
        queue.submit(pictures(1)[0], 10)
    assert queue.pending() == [first] and queue.log() == []


def test_training_reads_only_reviewed_pictures(tmp_path):
    root = tmp_path / "corrections"
    queue = open_queue(root)
    first, _ = queue.submit(pictures(1)[0], 0)
    with pytest.raises(ExtraDataError, match=f"review queue of corrections.*give {root / 'reviewed'}"):
        scan(root)
    queue.decide(first, "accept", "ada", via="test")
    assert scan(root / "reviewed").pictures == ((f"0/{first.sha256[:16]}.png", 0),)


def test_the_corrections_command(tmp_path, capsys):
    root = tmp_path / "corrections"
    queue = open_queue(root)
    ids = [queue.submit(png, 5, client="10.1.1.1")[0].id for png in pictures(3)]
    where = ["--corrections-dir", str(root)]

    assert main(["corrections", "list", *where]) == 0
    listing = capsys.readouterr().out
    assert all(i in listing for i in ids) and "3 pending" in listing

    assert main(["corrections", "accept", ids[0][:6], "--who", "ada", "--reason", "fine", *where]) == 0
    assert main(["corrections", "relabel", ids[1], "3", "--who", "ada", *where]) == 0
    assert main(["corrections", "reject", ids[2], "--who", "bob", "--reason", "noise", *where]) == 0
    capsys.readouterr()
    assert queue.pending() == []
    assert [name.split("/")[1] for name in reviewed_files(queue)] == ["3", "5"]

    assert main(["corrections", "list", "--log", "--json", *where]) == 0
    log = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["reviewer"], e["via"]) for e in log] == [
        ("accept", "ada", "mnist-pipeline corrections"),
        ("relabel", "ada", "mnist-pipeline corrections"),
        ("reject", "bob", "mnist-pipeline corrections"),
    ]
    assert main(["corrections", "accept", "ffff", *where]) == 1
    assert "no pending correction" in capsys.readouterr().err


def test_a_store_queue_is_shared_between_machines(s3_env, tmp_path, monkeypatch):
    """Queued on one machine, reviewed from another: nothing of the queue lives in a machine's mirror."""
    url = s3_env.store_url("shared-corrections")
    first, _ = open_queue(url).submit(pictures(1)[0], 4)
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / "machine-b"))
    other = open_queue(url)
    [seen] = other.pending()
    other.decide(seen, "accept", "ada", via="test")
    assert seen == first and open_queue(url).files.names("reviewed") == [f"reviewed/4/{first.sha256[:16]}.png"]
    # a training on a third machine reads the reviewed pictures through its mirror, kept equal to the store
    monkeypatch.setenv(store.CACHE_ENV_VAR, str(tmp_path / "machine-c"))
    stale = store.local_path(other.reviewed_location) / "4" / "removed-from-the-store.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    assert scan(store.mirror_tree(other.reviewed_location)).pictures == ((f"4/{first.sha256[:16]}.png", 4),)


def test_every_choice_of_the_review_form_is_a_decision_or_leaves_it_pending():
    from typing import get_args

    from mnist_pipeline.flows.review_flow import DECISIONS, Choice, Rest

    assert set(get_args(Choice)) == set(DECISIONS) | {"leave pending"} and set(get_args(Rest)) <= set(get_args(Choice))
