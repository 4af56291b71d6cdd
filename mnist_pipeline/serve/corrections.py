"""Corrections sent from the page: a digit the model got wrong, stored with its right label in the
extra-data layout that continuous training reads, `<root>/<label>/<time>-<id>.png`.

What is stored is the 28x28 image the model classified (the drawing laid out as MNIST's digits,
white on black), so training later reads exactly what was shown to the model. The folder is capped
at `max_bytes`: past it, corrections are refused rather than filling the disk. Every name is made
here, from the checked label, the time and a random id: nothing a request sends becomes a path.
"""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mnist_pipeline.core.data.mnist import NUM_CLASSES
from mnist_pipeline.core.support.errors import PipelineError
from mnist_pipeline.core.support.files import write_bytes_atomic


class CorrectionsFull(PipelineError):
    """The corrections folder has reached its size cap."""


class CorrectionStore:
    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.used = sum(
            path.stat().st_size for label in range(NUM_CLASSES) for path in (self.root / str(label)).glob("*.png")
        )

    def save(self, image: np.ndarray, label: int) -> Path:
        """Store uint8 [28, 28] `image` as a correction labelled `label` (0-9); its path."""
        from PIL import Image

        if label not in range(NUM_CLASSES):
            raise ValueError(f"label {label!r} is not a digit 0-9")
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")  # uint8 [28, 28]: grayscale
        png = buffer.getvalue()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.root / str(label) / f"{stamp}-{uuid.uuid4().hex[:12]}.png"
        with self._lock:
            if self.used + len(png) > self.max_bytes:
                raise CorrectionsFull(
                    f"the corrections folder {self.root} holds {self.used / 1e6:.1f} MB, its cap is "
                    f"{self.max_bytes / 1e6:.1f} MB: train on the corrections and move them away, or restart "
                    "the service with a larger --corrections-max-mb"
                )
            write_bytes_atomic(path, png)
            self.used += len(png)
        return path
