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
producer -> consumer links hang on (``zaqar_otel.links``): ``current()``
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

    def add_links(self, producers: Sequence[trace.SpanContext]) -> None:
        room = MAX_LINKS - len(self.links)
        own = self.span.get_span_context().trace_id
        for producer in producers[:max(room, 0)]:
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


def _ids_in(body: Any) -> list[str]:
    if isinstance(body, dict):
        if isinstance(body.get("messages"), list):
            return [str(m["id"]) for m in body["messages"]
                    if isinstance(m, dict) and "id" in m]
        if isinstance(body.get("resources"), list):  # a post: message hrefs
            return [str(href).rsplit("/", 1)[-1] for href in body["resources"]]
        if "id" in body and "body" in body:  # one message
            return [str(body["id"])]
    return []


class MessagingSpans:
    """Falcon middleware: one operation span per message/claim request."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._failed_once = False

    def process_resource(self, req: Any, resp: Any, resource: Any,
                         params: dict[str, Any]) -> None:
        try:
            if not trace.get_current_span().is_recording():
                return  # untraced request: nothing to do
            found = operation_of(req.method, req.uri_template,
                                 pop=bool(req.get_param("pop")))
            if found is None:
                return
            op_type, op_name, kind = found
            destination = params.get("queue_name") or params.get("topic_name") or ""
            attributes: dict[str, Any] = {
                "messaging.system": SYSTEM,
                "messaging.operation.type": op_type,
                "messaging.operation.name": op_name,
                "messaging.destination.name": destination,
            }
            project = req.get_header("X-Project-ID")
            if project:
                attributes["zaqar.project.id"] = project
            if params.get("message_id"):
                attributes["messaging.message.id"] = params["message_id"]
            span = self._tracer.start_span(f"{op_type} {destination}", kind=kind,
                                           attributes=attributes)
            token = context.attach(trace.set_span_in_context(span))
            operation = Operation(span)
            req.context.zaqar_otel_operation = (
                operation, token, _current.set(operation))
        except Exception:
            self._log_failure()

    def process_response(self, req: Any, resp: Any, resource: Any,
                         req_succeeded: bool) -> None:
        state = getattr(req.context, "zaqar_otel_operation", None)
        if state is None:
            return
        operation, token, current_token = state
        del req.context.zaqar_otel_operation
        try:
            self._describe(operation.span, resp, req_succeeded)
        except Exception:
            self._log_failure()
        finally:
            operation.span.end()
            _current.reset(current_token)
            context.detach(token)

    @staticmethod
    def _describe(span: trace.Span, resp: Any, succeeded: bool) -> None:
        status = int(str(resp.status).split()[0])
        if not succeeded or status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            return
        text = resp.text
        if not text or status >= 300:
            return
        ids = _ids_in(json.loads(text))
        if not ids:
            return
        if len(ids) == 1:
            span.set_attribute("messaging.message.id", ids[0])
            return
        # Semantic conventions: the count only on batch operations.
        span.set_attribute("messaging.batch.message_count", len(ids))
        if len(ids) <= MAX_IDS:
            span.set_attribute("zaqar.message.ids", ids)

    def _log_failure(self) -> None:
        if not self._failed_once:
            self._failed_once = True
            LOG.exception("zaqar-otel: a messaging operation span failed; "
                          "further failures are not logged")
