"""Pictures to classify: a hand-made zero, many different ones, as a PNG file, as a photograph of it,
as PNG bytes, and a huge PNG that is small on the wire."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def hand_made_zero(centre: float = 14.0) -> np.ndarray:
    """A "0" as MNIST lays out its digits: white (255 at its brightest) on black, 28x28, 20 pixels
    tall, its centre of mass at (`centre`, `centre`)."""
    y, x = np.mgrid[0:28, 0:28] - centre
    ring = np.clip(1.0 - np.abs(np.hypot(x / 6.5, y / 10.0) - 0.8) / 0.22, 0, 1)
    return (255 * ring / ring.max()).round().astype(np.uint8)


def distinct_drawings(count: int) -> Iterator[np.ndarray]:
    """`count` drawings of a zero, each with two dots of its own in the zero's hole: different pictures
    even once laid out as MNIST's digits (which centres them: shifted copies of one drawing become the
    same picture)."""
    zero = hand_made_zero()
    hole = [(y, x) for y in range(10, 19) for x in range(11, 18) if zero[y, x] == 0]
    for dots in itertools.islice(itertools.combinations(hole, 2), count):
        drawing = zero.copy()
        for y, x in dots:
            drawing[y, x] = 255
        yield drawing


def write_png(path: Path, image: np.ndarray, mode: str = "L") -> Path:
    """`image` (uint8 [28, 28]) saved as a PNG picture in colour mode `mode`."""
    from PIL import Image

    Image.fromarray(image).convert(mode).save(path)
    return path


def photographed(image: np.ndarray, path: Path, paper=(250, 248, 240)) -> Path:
    """`image` as if photographed: five times larger, RGB, off centre on a bigger page, as a JPEG."""
    from PIL import Image

    big = Image.fromarray(image).resize((140, 140), Image.BICUBIC).convert("RGB")
    page = Image.new("RGB", (260, 220), paper)
    page.paste(big, (70, 30))
    page.save(path, quality=90)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    """`image` (uint8 [h, w]) as the bytes of a grayscale PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of `width` x `height` black pixels that compresses to little (~100 KB for
    10,000 x 10,000: 100 MB once decoded, ~1 GB as float grey levels). Written row by row, so making
    it never holds the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\x00" * (width + 1)  # filter byte 0, then the row's pixels
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
