"""The HTTP stack alone, for bench/serve.py: a bare ASGI app that reads each request's body and answers
a fixed predict answer of the usual size, with no picture read and no model called.

Served by uvicorn with the service's settings (httptools, uvloop, the same number of processes) under
the same load, it measures the most requests a second that any service on this stack can answer on
the machine: the ceiling the service's own figures are read against.
"""

from __future__ import annotations

from typing import Any

ANSWER = (
    b'{"version":"v0001","predictions":[{"index":0,"class":7,"top":[{"class":7,"probability":0.999812},'
    b'{"class":2,"probability":0.000107},{"class":3,"probability":0.000034}],"probabilities":[0.000003,'
    b"0.000012,0.000107,0.000034,0.000001,0.000004,0.000002,0.999812,0.000011,0.000014]}]}"
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
