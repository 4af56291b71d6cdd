"""Plain grayscale PNGs decoded by libspng give Pillow's pixels; every other picture is left to Pillow."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mnist_pipeline.core.data.pictures import MAX_PICTURE_PIXELS, InputError, read_picture
from mnist_pipeline.core.data.png import plain_gray_png
from support.pictures import distinct_drawings, png_bytes


def pillow_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def saved(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def with_chunk(data: bytes, name: bytes, content: bytes) -> bytes:
    """`data` with a chunk added right after IHDR."""
    chunk = struct.pack(">I", len(content)) + name + content + struct.pack(">I", zlib.crc32(name + content))
    return data[:33] + chunk + data[33:]


@pytest.mark.parametrize("shape", [(28, 28), (1, 1), (7, 300), (120, 90)])
def test_plain_grayscale_pngs_decode_to_pillows_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    for image in [rng.integers(0, 256, shape, dtype=np.uint8), np.zeros(shape, np.uint8)]:
        for data in [png_bytes(image), saved(Image.fromarray(image), optimize=True, compress_level=1)]:
            decoded = plain_gray_png(data, MAX_PICTURE_PIXELS)
            assert decoded is not None and decoded.dtype == np.uint8
            assert np.array_equal(decoded, pillow_pixels(data))


def test_chunks_pillow_does_not_apply_are_ignored_alike():
    image = next(distinct_drawings(1))
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 100_000))  # gamma: neither decoder applies it to grey levels
    data = saved(Image.fromarray(image), pnginfo=info)
    assert np.array_equal(plain_gray_png(data, MAX_PICTURE_PIXELS), image)


def test_anything_else_is_left_to_pillow():
    image = next(distinct_drawings(1))
    plain = png_bytes(image)
    for other in [
        saved(Image.fromarray(image).convert("RGB")),
        saved(Image.fromarray(image).convert("P")),
        saved(Image.fromarray(image.astype(np.uint16) * 257)),  # 16-bit grayscale
        saved(Image.fromarray(image), transparency=0),  # a tRNS chunk
        with_chunk(plain, b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00"),  # may say how to turn it
        with_chunk(plain, b"tEXt", b"Raw profile type exif\x00..."),  # EXIF in a text chunk
        b"\xff\xd8\xff\xe0 not a PNG at all",
        plain[:60],  # cut short: Pillow says what is wrong
    ]:
        assert plain_gray_png(other, MAX_PICTURE_PIXELS) is None


def test_the_size_is_read_from_the_header_first():
    data = png_bytes(np.zeros((40, 50), np.uint8))
    assert plain_gray_png(data, 40 * 50) is not None
    assert plain_gray_png(data, 40 * 50 - 1) is None


def test_pictures_read_from_bytes_or_a_stream_are_laid_out_alike():
    for drawing in distinct_drawings(20):
        data = png_bytes(drawing)
        assert np.array_equal(read_picture(data), read_picture(io.BytesIO(data)))
    with pytest.raises(InputError, match="picture 1: not an image, .npy array or IDX file that can be read"):
        read_picture(png_bytes(next(distinct_drawings(1)))[:60], name="picture 1")
