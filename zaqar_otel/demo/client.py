"""A client that talks to Zaqar like the OpenStack CLI, and a typical session.

``profiled(key)`` is what ``openstack --os-profile KEY`` does: osc-lib calls
``osprofiler.profiler.init(KEY)`` and python-zaqarclient's HTTP transport adds
``osprofiler.web.get_trace_id_headers()`` (X-Trace-Info, X-Trace-HMAC) to
every request it sends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SessionRecord",
    "producer_consumer_session",
    "profiled",
    "zaqar_client",
]


def zaqar_client(url: str, project: str = "test-project") -> Any:
    """A v2 ``zaqarclient`` Client for a server without keystone.

    The noauth backend sends no token; the project id goes out as
    X-Project-Id, which Zaqar requires when ``auth_strategy`` is empty.
    """
    from zaqarclient.queues.v2 import client

    auth = {"backend": "noauth", "options": {"project_id": project}}
    return client.Client(url, version=2, conf={"auth_opts": auth})


@contextlib.contextmanager
def profiled(key: str) -> Iterator[Any]:
    """``openstack --os-profile KEY``: init the thread's profiler, then clean.

    Yields the osprofiler ``_Profiler``: ``get_base_id()`` is the trace id the
    CLI prints, ``get_id()`` the parent id sent in X-Trace-Info.
    """
    from osprofiler import profiler

    prof = profiler.init(key)
    try:
        yield prof
    finally:
        profiler.clean()


@dataclass
class SessionRecord:
    """What ``producer_consumer_session`` did and what came back."""

    queue: str
    posted: list[Any]
    posted_ids: list[str]
    listed: list[Any]
    claim_id: str | None
    claimed: list[Any]
    deleted_ids: list[str]


def producer_consumer_session(
    client: Any, queue_name: str, marker: str = "seq"
) -> SessionRecord:
    """Create a queue, post 2, list, claim, delete the claimed, delete queue.

    ``marker`` is a key of every message body, for scans of exported bytes.
    """
    # As `openstack messaging queue create`: PUT /v2/queues/{name}; v2 queues
    # are otherwise lazy and auto_create sends nothing.
    queue = client.queue(queue_name, force_create=True)
    bodies = [
        {"event": "created", marker: 1, "queue": queue_name},
        {"event": "updated", marker: 2, "queue": queue_name},
    ]
    posted = queue.post([{"body": b, "ttl": 300} for b in bodies])
    posted_ids = [href.rsplit("/", 1)[-1] for href in posted["resources"]]
    # echo: a client does not see its own messages in a listing otherwise.
    listed = [m.body for m in queue.messages(echo=True)]
    claim = queue.claim(ttl=60, grace=60, limit=10)
    claimed = list(claim)
    deleted = []
    for message in claimed:
        message.delete()  # carries ?claim_id=
        deleted.append(message.id)
    queue.delete()
    return SessionRecord(
        queue=queue_name,
        posted=bodies,
        posted_ids=posted_ids,
        listed=listed,
        claim_id=getattr(claim, "id", None),
        claimed=[m.body for m in claimed],
        deleted_ids=deleted,
    )
