"""A websocket client for Zaqar's websocket API (autobahn, which Zaqar ships).

``exchange(port, requests)`` sends each request (``{"action", "headers",
"body"}``, as ``request()`` makes one) in turn on one connection and returns
the responses; ``traced_server`` is zaqar-otel-server with its websocket
transport traced, and ``canary`` a signed action that flushes what was
exported before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

from harness.clients import signed
from harness.tracing import EVERYTHING, OTEL_SERVER, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

__all__ = ["canary", "exchange", "request", "traced_server"]


async def _exchange(port: int, requests: Sequence[dict[str, Any]],
                    timeout: float, handshake: Mapping[str, str]
                    ) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    responses: list[dict[str, Any]] = []
    finished: asyncio.Future[None] = loop.create_future()

    class Client(WebSocketClientProtocol):
        def onOpen(self) -> None:  # noqa: N802 - autobahn's names
            self._send_next()

        def _send_next(self) -> None:
            if len(responses) < len(requests):
                self.sendMessage(json.dumps(requests[len(responses)]).encode())
            else:
                self.sendClose()

        def onMessage(self, payload: bytes, is_binary: bool) -> None:  # noqa: N802
            responses.append(json.loads(payload))
            self._send_next()

        def onClose(self, clean: bool, code: int, reason: str) -> None:  # noqa: N802
            if not finished.done():
                finished.set_result(None)

    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}", headers=dict(handshake))
    factory.protocol = Client
    transport, _ = await loop.create_connection(factory, "127.0.0.1", port)
    try:
        await asyncio.wait_for(finished, timeout)
    finally:
        transport.close()
    return responses


def exchange(port: int, requests: Sequence[dict[str, Any]],
             timeout: float = 20.0,
             handshake: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Send ``requests`` on one websocket connection; their responses.

    ``handshake``: headers of the connection's HTTP upgrade request.
    """
    return asyncio.run(_exchange(port, requests, timeout, handshake or {}))


def request(action: str, body: dict[str, Any],
            headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One websocket request of a fresh client of the tests' project."""
    return {"action": action, "body": body,
            "headers": {"Client-ID": str(uuid.uuid4()),
                        "X-Project-ID": "test-project", **(headers or {})}}


@contextlib.contextmanager
def traced_server(receiver: OTLPReceiver, ratio: float) -> Iterator[ZaqarServer]:
    """zaqar-otel-server on its own Redis, websocket transport on, every
    switch on (``EVERYTHING``), unsigned requests traced at ``ratio`` and a
    caller's sampled flag not honoured."""
    extra = tracing(receiver, profiler=EVERYTHING,
                    otel={"sample_ratio": str(ratio), "honor_w3c_sampled": "false"})
    with RedisServer() as redis_server, ZaqarServer(
            redis_sql(redis_server.url), command=OTEL_SERVER, extra=extra,
            websocket=True) as server:
        yield server


def canary(server: ZaqarServer, receiver: OTLPReceiver,
           queue: str = "attack") -> int:
    """A signed action; once its span is here, so is everything before it."""
    headers, trace_id = signed()
    (resp,) = exchange(server.port, [request(
        "queue_get_stats", {"queue_name": queue}, headers)], timeout=30.0)
    assert resp["headers"]["status"] == 200, resp
    receiver.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER")
    return trace_id
