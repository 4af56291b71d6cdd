"""The drawing page in a real browser: Debian's chromium, headless, driven by Playwright. A digit drawn
by pointer events on the canvas is classified; "that's wrong, it is a ..." queues it for review under its label.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.core.data.review import open_queue
from support.servers import serving

pytestmark = [pytest.mark.slow, pytest.mark.needs_chromium]

INSTALL_CHROMIUM = (
    "the page tests drive Debian's chromium (Playwright's own browser download cannot work "
    "offline): install it with `apt-get install chromium`"
)


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(f"no chromium at {path}: {INSTALL_CHROMIUM}")
    return path


def draw_a_seven(page, canvas_selector: str = "#pad") -> None:
    """A 7 drawn as a user draws it, in one stroke: press, move in small steps (top bar, then down to
    the left), release."""
    box = page.locator(canvas_selector).bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:  # x, y in 0-1 of the canvas
        return box["x"] + x * box["width"], box["y"] + y * box["height"]

    page.mouse.move(*at(0.28, 0.2))
    page.mouse.down()
    page.mouse.move(*at(0.72, 0.2), steps=12)
    page.mouse.move(*at(0.45, 0.85), steps=15)
    page.mouse.up()


def test_draw_a_digit_see_the_answer_and_store_a_correction(mlp_artifacts, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    with serving(mlp_artifacts, log=tmp_path / "serve.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 480, "height": 900})
            page.goto(url)
            expect(page.locator("#version")).to_contain_text("model: v0001 (mlp, test accuracy", timeout=60_000)

            draw_a_seven(page)
            rows = page.locator("#results li")
            expect(rows).to_have_count(3, timeout=60_000)
            shown = [int(digit) for digit in rows.locator(".digit").all_inner_texts()]
            percentages = [float(text.strip("<%")) for text in rows.locator(".probability").all_inner_texts()]
            assert len(set(shown)) == 3 and percentages == sorted(percentages, reverse=True)
            assert shown[0] == 7, f"read a drawn 7 as {shown}"

            page.locator('#labels button[data-label="3"]').click()  # "that's wrong, it is a 3"
            expect(page.locator("#status")).to_contain_text("kept as a 3 for review", timeout=60_000)
        finally:
            browser.close()

    queue = open_queue(mlp_artifacts / "corrections")
    [pending] = queue.pending()  # waiting for a person's review, not in training data
    assert (
        pending.label == 3
        and pending.model_top[0][0] == 7
        and not (mlp_artifacts / "corrections" / "reviewed").exists()
    )
    image = np.asarray(Image.open(io.BytesIO(queue.picture(pending))))
    assert image.shape == (28, 28) and image.max() == 255 and image[0].max() == 0  # a digit, white on black
