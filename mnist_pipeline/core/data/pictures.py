"""Read what users want classified into raw uint8 [n, 28, 28] images, as the model takes them.

- Pictures (PNG, JPEG or anything else Pillow reads, any size or colour mode) are laid out the way
  MNIST's digits are: grayscale, white digit on black, the digit's bounding box scaled to fit 20x20
  (aspect ratio kept), placed in a 28x28 canvas so that its centre of mass is at the centre. An
  image that already is an MNIST digit comes through unchanged.
- `.npy` arrays and IDX files (MNIST's own format, gzipped or not) already hold 28x28 images:
  their pixel values are taken as they are.

`invert=True` is for dark digits on a light background: every input is inverted (255 - pixel).

A picture's size is read from its header before any pixel is decoded: a small, highly compressed
file can announce 12,000 x 12,000 pixels, which would decode into gigabytes. The command line and the
HTTP service (`mnist_pipeline.serve`) both read pictures through `read_picture`, so they lay out and
refuse the same pictures.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from mnist_pipeline.core.data.idx import GZIP_MAGIC, IdxError, is_idx, read_idx
from mnist_pipeline.core.data.mnist import IMAGE_SHAPE
from mnist_pipeline.core.data.png import plain_gray_png
from mnist_pipeline.core.support.errors import PermanentError

if TYPE_CHECKING:
    import PIL.Image

DIGIT_BOX = 20  # MNIST fits each digit's bounding box into 20x20 ...
CANVAS = IMAGE_SHAPE[0]  # ... and centres it by centre of mass in 28x28
CENTRE = 14.0  # where MNIST's centres of mass are (mean over the test split: 13.99, 14.01)
INK_LEVEL = 0.1  # pixels above this share of the brightest count as the digit (below: JPEG noise)
MARGIN = 4  # pixels around the digit's box (at 28x28 scale) kept when it is cut out
MIN_CONTRAST = 8  # grey levels above the background below which a picture counts as blank
SIZE_TOLERANCE = 1  # a box within a pixel of 20 is MNIST-sized already: resampling would only blur it
# Pictures up to 16.8 megapixels are decoded (a 12-megapixel phone photo fits; 4096 x 4096 is the
# largest square): laid out as float64 grey levels, that is at most ~135 MB a copy.
MAX_PICTURE_PIXELS = 4096 * 4096

NPY_MAGIC = b"\x93NUMPY"
ACCEPTED_SHAPES = "[28, 28], [784], [n, 28, 28], [n, 28, 28, 1] or [n, 784]"


class InputError(PermanentError):
    """A file that cannot be classified; the message names the file and what is wrong."""


def file_kind(path: Path) -> str:
    """ "npy", "idx" (gzipped or not) or "picture" (anything else: Pillow decides), by content."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror})") from error
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(GZIP_MAGIC) or is_idx(head):
        return "idx"
    return "picture"


def read_inputs(path: Path, invert: bool = False) -> np.ndarray:
    """The images in one file as uint8 [n, 28, 28] (n = 1 for a picture)."""
    kind = file_kind(path)
    if kind == "picture":
        return read_picture(path, invert)[np.newaxis]
    images = as_images(_read_npy(path) if kind == "npy" else _read_idx(path), path)
    return 255 - images if invert else images


def _read_npy(path: Path) -> np.ndarray:
    try:
        array: np.ndarray = np.load(path, allow_pickle=False)  # never unpickle: an object array is refused
        return array
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{path}: not a readable .npy array of pixel values ({error})") from error


def _read_idx(path: Path) -> np.ndarray:
    try:
        return read_idx(path)
    except IdxError as error:
        raise InputError(str(error)) from error


def as_images(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Check an array's shape and values and return it as uint8 [n, 28, 28]; `path` names it in errors."""
    shape = list(array.shape)
    if array.shape == IMAGE_SHAPE:
        array = array[np.newaxis]
    elif array.shape == (IMAGE_SHAPE[0] * IMAGE_SHAPE[1],):  # one image, flattened
        array = array.reshape(1, *IMAGE_SHAPE)
    elif array.ndim == 4 and array.shape[1:] == (*IMAGE_SHAPE, 1):
        array = array[..., 0]
    elif array.ndim == 2 and array.shape[1] == IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
        array = array.reshape(-1, *IMAGE_SHAPE)
    elif not (array.ndim == 3 and array.shape[1:] == IMAGE_SHAPE):
        hint = " (a labels file?)" if array.ndim == 1 else ""
        raise InputError(f"{path}: holds an array of shape {shape}{hint}; expected {ACCEPTED_SHAPES}")
    if len(array) == 0:
        raise InputError(f"{path}: holds no images (shape {shape})")
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{path}: holds {array.dtype} values; expected pixel values 0-255 (uint8 like MNIST)")
    low, high = array.min(), array.max()
    if low < 0 or high > 255 or not np.array_equal(array, np.round(array)):
        scaled = " If they are scaled to [0, 1], multiply by 255." if low >= 0 and high <= 1 else ""
        raise InputError(
            f"{path}: holds {array.dtype} values from {low} to {high}; expected whole pixel values "
            f"0-255 (uint8 like MNIST).{scaled}"
        )
    return array.astype(np.uint8)


@dataclass(frozen=True)
class Wording:
    """How the caller's users name what they may give and how they ask for inversion, for messages."""

    readable: str = "an image, .npy array or IDX file"
    accepted: str = "PNG or JPEG pictures, .npy arrays or MNIST IDX files"
    invert_option: str = "--invert"


def read_picture(
    source: Path | BinaryIO | bytes,
    invert: bool = False,
    name: Path | str | None = None,
    wording: Wording = Wording(),
) -> np.ndarray:
    """A picture (a file, an open binary stream, or its bytes, such as an upload) laid out as an MNIST
    digit: uint8 [28, 28]. `name` names it in errors (default: the path)."""
    label = str(source) if name is None else name
    plain = plain_gray_png(source, MAX_PICTURE_PIXELS) if isinstance(source, bytes) else None
    if plain is not None:
        gray = plain.astype(np.float64)
    else:
        gray = _decoded(io.BytesIO(source) if isinstance(source, bytes) else source, invert, label, wording)
    if invert:
        gray = 255.0 - gray
    background = _median(gray)
    if background > 127:  # mostly light: the background is light, so the digit is dark
        fix = f"leave out {wording.invert_option}" if invert else f"pass {wording.invert_option}"
        raise InputError(
            f"{label}: the picture {'is, once inverted,' if invert else 'is'} a dark digit on a light background; "
            f"the model reads light digits on a dark background (as MNIST's): {fix}"
        )
    return mnist_layout(gray, label, background)


def _decoded(source: Path | BinaryIO, invert: bool, label: Path | str, wording: Wording) -> np.ndarray:
    """The picture's grey levels as float [h, w], read by Pillow."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            _check_size(image.size, label)  # from the header: nothing is decoded yet
            ImageOps.exif_transpose(image, in_place=True)  # loads it; in place: no copy
            return _grayscale(image, background=255 if invert else 0)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        detail = "no picture format Pillow knows" if isinstance(error, UnidentifiedImageError) else str(error)
        raise InputError(
            f"{label}: not {wording.readable} that can be read ({detail}). Give {wording.accepted}."
        ) from error


def _check_size(size: tuple[int, int], name: Path | str) -> None:
    width, height = size
    if width * height > MAX_PICTURE_PIXELS:
        raise InputError(
            f"{name}: the picture is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"pictures of up to {MAX_PICTURE_PIXELS / 1e6:.1f} megapixels are read (4096 x 4096). Scale it "
            "down first: a digit needs no more than a few hundred pixels a side."
        )


def _grayscale(image: PIL.Image.Image, background: int) -> np.ndarray:
    """A float [h, w] array in 0-255; transparent parts show `background` (the canvas colour)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNGs
        return np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float64), 0, 255)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.float64)


def _median(values: np.ndarray) -> float:
    """`np.median(values)`, without the generality that made it a fifth of a picture's layout time in
    the service (two calls of ~0.1 ms each for a 28x28 picture)."""
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return float(np.partition(flat, half)[half])
    low, high = np.partition(flat, (half - 1, half))[half - 1 : half + 1]
    return (float(low) + float(high)) / 2


def mnist_layout(gray: np.ndarray, path: Path | str = "image", background: float | None = None) -> np.ndarray:
    """Lay out a white-on-black digit as MNIST does: 28x28 uint8, digit fitted in 20x20, centred.

    The background (`background`, else the median pixel: most of a digit picture is background)
    becomes black and the brightest pixel white; the digit's bounding box is the pixels above
    INK_LEVEL of that. A box already 19-21 pixels on its long side is not resampled, and a digit off
    centre by half a pixel or less is not moved: every MNIST test image comes through unchanged (but
    for a grey level when its brightest pixel is 254).
    """
    gray = np.maximum(gray - (_median(gray) if background is None else background), 0)
    peak = gray.max()
    if peak < MIN_CONTRAST:
        raise InputError(f"{path}: no digit found: the picture is blank (all pixels about the same)")
    gray *= 255.0 / peak
    ink = gray > INK_LEVEL * 255
    (first_row, last_row), (first_col, last_col) = _span(ink, axis=1), _span(ink, axis=0)
    size = max(last_row - first_row + 1, last_col - first_col + 1)
    scale = 1.0 if abs(size - DIGIT_BOX) <= SIZE_TOLERANCE else DIGIT_BOX / size
    margin = math.ceil(MARGIN / scale)  # keeps the faint edges of the strokes
    top, left = max(0, first_row - margin), max(0, first_col - margin)
    digit = gray[top : last_row + 1 + margin, left : last_col + 1 + margin]
    if scale != 1:
        from PIL import Image

        new_size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
        digit = np.clip(
            np.asarray(Image.fromarray(digit.astype(np.float32)).resize(new_size, Image.Resampling.LANCZOS)), 0, 255
        )
    return _centre(digit, (top, left) if scale == 1 else (0, 0))


def _span(marked: np.ndarray, axis: int) -> tuple[int, int]:
    """The first and last row (axis 1) or column (axis 0) of `marked` with a True in it (it has one)."""
    where = np.asarray(marked.any(axis=axis)).nonzero()[0]
    return int(where[0]), int(where[-1])


def _whole_pixels(offset: float) -> int:
    """The nearest whole pixel, half a pixel rounding towards 0 (an MNIST digit centred to the half
    pixel stays where it is)."""
    whole = math.ceil(abs(offset) - 0.5)
    return whole if offset > 0 else -whole


def _centre(digit: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Place `digit` in a 28x28 canvas with its centre of mass at CENTRE (parts outside are cut).
    `origin` is where an unscaled `digit` was cut from: the move from there is what is rounded."""
    weight = digit.sum()
    centre_row = (digit.sum(axis=1) * np.arange(digit.shape[0])).sum() / weight + origin[0]
    centre_col = (digit.sum(axis=0) * np.arange(digit.shape[1])).sum() / weight + origin[1]
    top = origin[0] + _whole_pixels(CENTRE - centre_row)
    left = origin[1] + _whole_pixels(CENTRE - centre_col)
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float64)
    rows = slice(max(0, top), min(CANVAS, top + digit.shape[0]))
    cols = slice(max(0, left), min(CANVAS, left + digit.shape[1]))
    canvas[rows, cols] = digit[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return np.rint(canvas).astype(np.uint8)
