"""The corrections endpoint of a real `mnist-pipeline serve` process beyond loopback: it refuses to start
without a token (exit 2, saying what to set), and with one, a correction without it or with a wrong one
gets 401 and nothing is stored; a flood from one client gets 429 past the rate limit and nothing of it
reaches training data. (The token and rate limit in detail, in process: test_serve.py.)"""

from __future__ import annotations

import time

import httpx
import pytest

from mnist_pipeline.core.data.review import open_queue
from mnist_pipeline.core.support.settings import CORRECTIONS_TOKEN
from support.commands import run_cli
from support.pictures import hand_made_zero, png_bytes
from support.servers import serving


def test_beyond_loopback_without_a_token_the_service_refuses_to_start(tmp_path):
    done = run_cli(
        "serve", "--host", "0.0.0.0", "--artifacts-dir", str(tmp_path), env={CORRECTIONS_TOKEN: ""}, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "--corrections-token-file" in done.stderr and CORRECTIONS_TOKEN in done.stderr
    assert "--allow-anonymous-corrections" in done.stderr


@pytest.mark.slow
def test_with_a_token_file_a_correction_needs_it(two_versions, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    options = ("--host", "0.0.0.0", "--corrections-token-file", str(token_file), "--corrections-per-minute", "20")
    drawing = {"file": ("d.png", png_bytes(hand_made_zero()))}
    with serving(two_versions, *options, log=tmp_path / "serve.log") as url:
        for headers in ({}, {"Authorization": "Bearer abc12"}):
            answer = httpx.post(f"{url}/v1/corrections", files=drawing, data={"label": "0"}, headers=headers)
            assert answer.status_code == 401, answer.text
        assert not (two_versions / "corrections").exists()
        answer = httpx.post(
            f"{url}/v1/corrections", files=drawing, data={"label": "0"}, headers={"Authorization": "Bearer abc123"}
        )
        assert answer.status_code == 201, answer.text
        first = answer.json()["id"]
        [pending] = open_queue(two_versions / "corrections").pending()
        assert pending.id == first and pending.client == "127.0.0.1"

        # 300 more from the same client: the bucket holds 20 (one spent above), then one each 3 s
        started = time.monotonic()
        with httpx.Client(headers={"Authorization": "Bearer abc123"}) as authorized:
            codes = [authorized.post(f"{url}/v1/corrections", files=drawing, data={"label": "1"}) for _ in range(300)]
        refilled = (time.monotonic() - started) / 3  # a busy machine takes longer, and the bucket refills
    statuses = [answer.status_code for answer in codes]
    assert set(statuses) == {201, 429} and statuses.count(201) <= 20 + refilled, (statuses.count(201), refilled)
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in codes if answer.status_code == 429)
    reviewed = two_versions / "corrections" / "reviewed"
    # the change check fingerprints reviewed/ only: with nothing there, it sees no change
    assert not reviewed.exists() or not any(reviewed.rglob("*.png"))
