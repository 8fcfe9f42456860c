"""Messaging operation spans: what a request did to which queue.

A falcon middleware, added to Zaqar's falcon app, opens one span per message
or claim operation inside the server span, with the OpenTelemetry messaging
conventions: ``send orders`` (PRODUCER) for a post, ``receive orders``
(CONSUMER) for a list, get, claim or pop, ``settle orders`` (CLIENT) for a
delete or a claim release::

    messaging.system            zaqar
    messaging.operation.type    send | receive | settle
    messaging.operation.name    post | list | get | claim | pop | delete | release
    messaging.destination.name  the queue (or topic)
    messaging.batch.message_count, messaging.message.id (or zaqar.message.ids)
    zaqar.project.id

The server span keeps the HTTP conventions. The operation span is the one
producer -> consumer links hang on (``zaqar_otel.messaging.links``): ``current()``
gives it to the storage code below it.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel import patching

LOG = logging.getLogger(__name__)

SYSTEM = "zaqar"
#: Message ids listed on a span at most; beyond, only the count.
MAX_IDS = 10
#: Links to producers per operation at most (the SDK keeps 128).
MAX_LINKS = 32

# (method, route template after the version) -> (type, name, kind)
_OPERATIONS: dict[tuple[str, str], tuple[str, str, SpanKind]] = {
    ("POST", "/queues/{queue_name}/messages"): ("send", "post", SpanKind.PRODUCER),
    ("GET", "/queues/{queue_name}/messages"): ("receive", "list", SpanKind.CONSUMER),
    ("DELETE", "/queues/{queue_name}/messages"): ("settle", "delete", SpanKind.CLIENT),
    ("GET", "/queues/{queue_name}/messages/{message_id}"):
        ("receive", "get", SpanKind.CONSUMER),
    ("DELETE", "/queues/{queue_name}/messages/{message_id}"):
        ("settle", "delete", SpanKind.CLIENT),
    ("POST", "/queues/{queue_name}/claims"): ("receive", "claim", SpanKind.CONSUMER),
    ("DELETE", "/queues/{queue_name}/claims/{claim_id}"):
        ("settle", "release", SpanKind.CLIENT),
    ("POST", "/topics/{topic_name}/messages"): ("send", "post", SpanKind.PRODUCER),
    ("GET", "/topics/{topic_name}/messages"): ("receive", "list", SpanKind.CONSUMER),
}
_POP = ("receive", "pop", SpanKind.CONSUMER)


@dataclass
class Operation:
    """The open operation span of this request, and links found for it."""

    span: trace.Span
    links: list[trace.SpanContext] = field(default_factory=list)
    # Message ids already looked up: a pop or claim may read through another
    # wrapped method (bulk_get, list) of the same store.
    seen: set[str] = field(default_factory=set)

    def add_links(self, producers: Sequence[trace.SpanContext]) -> None:
        """One link per producing span, however many of its messages came
        back (a post of ten, claimed together, is one link, not ten)."""
        own = self.span.get_span_context().trace_id
        known = {(c.trace_id, c.span_id) for c in self.links}
        for producer in producers:
            ids = (producer.trace_id, producer.span_id)
            if ids in known:
                continue
            if len(self.links) >= MAX_LINKS:
                break
            known.add(ids)
            self.links.append(producer)
            # A producer of the same trace is already an ancestor: still a
            # link, it says which post this message came from.
            self.span.add_link(producer, {"zaqar.link": "producer",
                                          "zaqar.same_trace": producer.trace_id == own})


_current: contextvars.ContextVar[Operation | None] = contextvars.ContextVar(
    "zaqar_otel_operation", default=None)


def current() -> Operation | None:
    """The messaging operation open in this request, if it is traced."""
    return _current.get()


def operation_of(method: str, route: str | None, pop: bool = False
                 ) -> tuple[str, str, SpanKind] | None:
    """(operation type, name, span kind) of a request, None if not one."""
    if not route:
        return None
    path = "/" + route.split("/", 2)[2] if route.count("/") >= 2 else route
    found = _OPERATIONS.get((method, path))
    if found and pop and found[1] == "delete" and "{message_id}" not in path:
        return _POP
    return found


def ids_in(body: Any) -> list[str]:
    """Message ids in a response body (WSGI or websocket API)."""
    if isinstance(body, dict):
        if isinstance(body.get("message_ids"), list):  # websocket post
            return [str(i) for i in body["message_ids"]]
        if isinstance(body.get("messages"), dict):  # websocket get
            return ids_in(body["messages"])
        if isinstance(body.get("messages"), list):
            return [str(m["id"]) for m in body["messages"]
                    if isinstance(m, dict) and "id" in m]
        if isinstance(body.get("resources"), list):  # a post: message hrefs
            return [str(href).rsplit("/", 1)[-1] for href in body["resources"]]
        if "id" in body and "body" in body:  # one message
            return [str(body["id"])]
    return []


def open_operation(tracer: trace.Tracer, found: tuple[str, str, SpanKind],
                   destination: str, project: str | None = None,
                   message_id: str | None = None) -> tuple[Operation, Any]:
    """Start the operation span, make it current; ``close_operation`` ends it."""
    op_type, op_name, kind = found
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": op_type,
        "messaging.operation.name": op_name,
        "messaging.destination.name": destination,
    }
    if project:
        attributes["zaqar.project.id"] = project
    if message_id:
        attributes["messaging.message.id"] = message_id
    span = tracer.start_span(f"{op_type} {destination}", kind=kind,
                             attributes=attributes)
    operation = Operation(span)
    tokens = (context.attach(trace.set_span_in_context(span)),
              _current.set(operation))
    return operation, tokens


_close_failure = patching.FailureLog(LOG, "ending a messaging operation span failed")


def close_operation(operation: Operation, tokens: Any, status: int,
                    body: Any = None) -> None:
    """Describe the outcome (status, message ids) and end the span.

    Runs on the request thread: it never raises, and the context is put back
    whatever fails.
    """
    try:
        describe(operation.span, status, body)
        operation.span.end()
    except Exception:
        _close_failure()
    finally:
        _current.reset(tokens[1])
        context.detach(tokens[0])


def describe(span: trace.Span, status: int, body: Any) -> None:
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"status {status}"))
        return
    ids = ids_in(body) if status < 300 else []
    if len(ids) == 1:
        span.set_attribute("messaging.message.id", ids[0])
    elif ids:
        # Semantic conventions: the count only on batch operations.
        span.set_attribute("messaging.batch.message_count", len(ids))
        if len(ids) <= MAX_IDS:
            span.set_attribute("zaqar.message.ids", ids)


class MessagingSpans:
    """Falcon middleware: one operation span per message/claim request."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._log_failure = patching.FailureLog(
            LOG, "a messaging operation span failed")

    def process_resource(self, req: Any, resp: Any, resource: Any,
                         params: dict[str, Any]) -> None:
        try:
            if not trace.get_current_span().is_recording():
                return  # untraced request: nothing to do
            found = operation_of(req.method, req.uri_template,
                                 pop=bool(req.get_param("pop")))
            if found is None:
                return
            destination = params.get("queue_name") or params.get("topic_name") or ""
            req.context.zaqar_otel_operation = open_operation(
                self._tracer, found, destination, req.get_header("X-Project-ID"),
                params.get("message_id"))
        except Exception:
            self._log_failure()

    def process_response(self, req: Any, resp: Any, resource: Any,
                         req_succeeded: bool) -> None:
        state = getattr(req.context, "zaqar_otel_operation", None)
        if state is None:
            return
        try:
            operation, tokens = state
            del req.context.zaqar_otel_operation
        except Exception:
            self._log_failure()
            return
        try:
            status = int(str(resp.status).split()[0])
            if not req_succeeded and status < 400:
                status = 500  # raised, yet no error response was rendered
            body = json.loads(resp.text) if resp.text and status < 300 else None
        except Exception:
            self._log_failure()
            status, body = 200, None
        close_operation(operation, tokens, status, body)
