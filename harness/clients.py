"""Signed clients: requests as a key holder (``openstack --os-profile KEY``)
sends them, one at a time or from many threads.

``signed()`` makes fresh OSProfiler headers under the tests' key
(:data:`harness.tracing.KEY`) and returns the trace id they name;
``signed_requests`` sends many signed GETs from client threads and says what
each one got; ``shape`` is what a client may rely on in a JSON answer (to
compare a traced server's answers with plain Zaqar's).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.tracing import KEY
from zaqar_otel.demo.zaqar_server import ZaqarServer
from zaqar_otel.propagation import codec

__all__ = [
    "Answer",
    "Answers",
    "kept_by_trace_id_ratio",
    "shape",
    "signed",
    "signed_requests",
    "signed_stats",
]


def signed(key: str = KEY) -> tuple[dict[str, str], int]:
    """Fresh OSProfiler headers (a new trace) and that trace's id."""
    base_id = str(uuid.uuid4())
    return codec.encode(base_id, str(uuid.uuid4()), key), uuid.UUID(base_id).int


def kept_by_trace_id_ratio() -> int:
    """A trace id ``TraceIdRatioBased`` keeps at any ratio: low 64 bits zero."""
    return random.getrandbits(63) + 1 << 64


def shape(value: Any) -> Any:
    """What a client can rely on in a JSON answer: keys and types, and the
    text of error bodies (Zaqar's titles and descriptions are fixed)."""
    if isinstance(value, dict):
        if set(value) <= {"title", "description"}:
            return tuple(sorted(value.items()))
        return tuple(sorted((k, shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(sorted({repr(shape(v)) for v in value})))
    return type(value).__name__


def signed_stats(server: ZaqarServer, queue: str, requests: int) -> list[int]:
    """``requests`` signed stats requests of ``queue``, each answered 200;
    their trace ids."""
    trace_ids = []
    for _ in range(requests):
        headers, trace_id = signed()
        trace_ids.append(trace_id)
        assert server.request("GET", f"/v2/queues/{queue}/stats",
                              headers=headers)[0] == 200
    return trace_ids


@dataclass(frozen=True)
class Answer:
    """One signed request: its trace id, status (-1: no answer) and seconds."""

    trace_id: int
    status: int
    seconds: float


@dataclass
class Answers:
    """What the client threads of ``signed_requests`` got."""

    answers: list[Answer] = field(default_factory=list)

    @property
    def trace_ids(self) -> list[int]:
        return [a.trace_id for a in self.answers]

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def slowest(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    def by_trace(self) -> dict[int, int]:
        """{trace id: status}."""
        return {a.trace_id: a.status for a in self.answers}


def signed_requests(server: ZaqarServer, path: str, requests: int,
                    clients: int = 8, join_timeout: float = 120.0,
                    trace_header: str | None = None) -> Answers:
    """``requests`` signed GETs of ``path`` from ``clients`` threads (each
    waits up to 30 s for its answer; each thread is joined for up to
    ``join_timeout`` s). ``trace_header``: a header that also carries the
    request's trace id in hex, for a server's request log to print."""
    answers = Answers()
    lock = threading.Lock()
    todo = list(range(requests))

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            headers, trace_id = signed()
            if trace_header:
                headers[trace_header] = f"{trace_id:032x}"
            started = time.monotonic()
            try:
                status = server.request("GET", path, headers=headers, timeout=30)[0]
            except OSError:
                status = -1
            with lock:
                answers.answers.append(
                    Answer(trace_id, status, time.monotonic() - started))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    return answers
