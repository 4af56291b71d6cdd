"""JSON request bodies, parsed only when their nesting is within what a valid request needs.

`json.loads` recurses once per level of nesting: a body of 200,000 `[` (400 KB) raised RecursionError
deep in the parser, a 500. The nesting is measured first, without parsing: every bracket byte outside
the payload's strings counts (a bracket inside a string counts too, which at worst refuses a body
whose names are made of brackets: none of this API's are). The count runs over bytes in C (numpy),
a few milliseconds for the largest body the service takes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

OPENING = np.zeros(256, np.int8)
OPENING[[ord("["), ord("{")]] = 1
OPENING[[ord("]"), ord("}")]] = -1


class PayloadError(ValueError):
    """A body that is not JSON, or nested deeper than any valid request."""


def nesting(body: bytes) -> int:
    """The deepest nesting of brackets and braces in `body`."""
    steps = OPENING[np.frombuffer(body, np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def parse_json(body: bytes, max_depth: int, accepted: str) -> Any:
    """The JSON `body`, refused (PayloadError naming `accepted`) when nested deeper than `max_depth`."""
    depth = nesting(body)
    if depth > max_depth:
        raise PayloadError(
            f"the JSON is nested {depth} levels deep; a valid request is at most {max_depth} deep ({accepted})"
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise PayloadError(f"the body is not JSON ({error})") from None
