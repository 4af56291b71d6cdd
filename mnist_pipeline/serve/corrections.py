"""Corrections sent from the page: a digit the model got wrong, with the label its sender claims.

They go into the review queue (`core/data/review.py`) as pending, never straight into training data:
a person accepts, relabels or rejects each one first (the Prefect review flow, or
`mnist-pipeline corrections`). What is stored is the 28x28 image the model classified (the drawing
laid out as MNIST's digits, white on black), with what the model read and which version read it.
The pending pictures are capped at `max_bytes`: past it, corrections are refused rather than filling
the disk. Every name is made by the queue from hashes: nothing a request sends becomes a path.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable

import numpy as np

from mnist_pipeline.core.data.review import Correction, open_queue
from mnist_pipeline.core.support.errors import PipelineError


class CorrectionsFull(PipelineError):
    """The pending corrections have reached their size cap."""


class CorrectionStore:
    def __init__(self, location: str, max_bytes: int):
        self.queue = open_queue(location)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.used = self.queue.pending_bytes()

    def save(
        self,
        image: np.ndarray,
        label: int,
        *,
        client: str | None = None,
        model_version: str | None = None,
        model_top: Iterable[tuple[int, float]] = (),
    ) -> tuple[Correction, bool]:
        """Queue uint8 [28, 28] `image` as a correction labelled `label` (0-9) for review:
        (the pending correction, whether it is new)."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")  # uint8 [28, 28]: grayscale
        png = buffer.getvalue()
        with self._lock:
            if self.used + len(png) > self.max_bytes:
                raise CorrectionsFull(
                    f"the corrections waiting for review in {self.queue.location} hold {self.used / 1e6:.1f} MB, "
                    f"their cap is {self.max_bytes / 1e6:.1f} MB: review them (`mnist-pipeline corrections list`), "
                    "or restart the service with a larger --corrections-max-mb"
                )
            correction, new = self.queue.submit(
                png, label, client=client, model_version=model_version, model_top=model_top
            )
            if new:
                self.used += len(png)
        return correction, new
