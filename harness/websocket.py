"""A websocket client for Zaqar's websocket API (autobahn, which Zaqar ships).

``exchange(port, requests)`` sends each request (``{"action", "headers",
"body"}``) in turn on one connection and returns the responses.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol


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
