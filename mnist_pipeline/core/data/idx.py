"""IDX, MNIST's own file format (http://yann.lecun.com/exdb/mnist/), gzipped or not, read into numpy."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from mnist_pipeline.core.support.errors import PermanentError

GZIP_MAGIC = b"\x1f\x8b"
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(PermanentError):
    """A file that is not a whole IDX file; the message names it and what is wrong."""


def is_idx(head: bytes) -> bool:
    """Whether the first 4 bytes are an IDX magic number (two zero bytes, a type code, a rank)."""
    return len(head) >= 4 and head[:2] == b"\x00\x00" and head[2] in IDX_DTYPES and head[3] >= 1


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file, with the shape and type its header announces."""
    raw = path.read_bytes()
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise IdxError(f"{path}: a damaged gzip file ({error})") from error
    if not is_idx(raw[:4]):
        raise IdxError(f"{path}: not an IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: IDX header is cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(
            f"{path}: IDX header announces shape {list(shape)} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes; the file is truncated or damaged"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)
