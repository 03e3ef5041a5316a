"""The wire floor: a bare ASGI callable on the same uvicorn, no framework at all.

It reads the body, parses it with the standard library's ``json.loads`` and answers a constant
JSON document (one row or, for ``/predict/batch``, 100 rows' worth). Nothing else: no routing
table, no validation, no model, no log. What is left is what uvicorn (httptools, uvloop) and
the ASGI calls cost per request: the most any Python server on this stack could do, and the
yardstick of issue 19's targets.
"""

from __future__ import annotations

import json
from typing import Any

_HEADERS = [(b"content-type", b"application/json")]
_ONE = json.dumps({"predictions": [0], "probabilities": [[0.5, 0.5]]}).encode()
_MANY = json.dumps({"predictions": [0] * 100, "probabilities": [[0.5, 0.5]] * 100}).encode()
_OK = b'{"status": "ok"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every HTTP request: GET with ``{"status": "ok"}``, POST with a constant."""
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        if message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        doc = json.loads(body)
        answer = _MANY if len(doc.get("instances", ())) > 1 else _ONE
    else:
        answer = _OK
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
