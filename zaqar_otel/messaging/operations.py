"""Messaging operation spans: what a request did to which queue.

A falcon middleware, added to Zaqar's falcon app, opens one span per message
or claim operation inside the server span, with the OpenTelemetry messaging
conventions: ``send orders`` (PRODUCER) for a post, ``receive orders``
(CONSUMER) for a list, get, claim or pop, ``settle orders`` (CLIENT) for a
delete or a claim release::

    messaging.system            zaqar
    messaging.operation.type    send | receive | settle
    messaging.operation.name    post | list | get | claim | pop | delete | release
    messaging.destination.name  the queue (or topic), if a valid name
                                (``queue_name``: else the span is ``send``,
                                ``receive`` or ``settle`` alone, invariant 8)
    messaging.batch.message_count, messaging.message.id (or zaqar.message.ids)
    zaqar.project.id

The server span keeps the HTTP conventions. The operation span is the one
producer -> consumer links hang on (``zaqar_otel.messaging.links``): ``current()``
gives it to the storage code below it.

With metrics on, the same middleware measures every request, traced or not:
it notes the route template in the WSGI environ (``ROUTE_ENVIRON``, for the
entry's HTTP metric) and hands each message or claim operation to
``OperationMetrics.operation`` with its duration, status, the number of
messages it carried and, for a claim, pop or listing, their ages. Those come
from the very object Zaqar rendered (``capture_rendered``), not from parsing
the response body again; so do a traced operation's message ids (set-up
captures the rendered object whenever requests are traced)::

    falcon_app.add_middleware(MessagingSpans(tracer, metrics=recorder))
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from zaqar_otel import patching
from zaqar_otel.redact import HTTP_METHODS

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
# Zaqar's rule for queue and topic names (zaqar.transport.validation), with
# fullmatch: its "$" would let a trailing newline through.
_QUEUE_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}")


def queue_name(name: object) -> str | None:
    """``name`` if Zaqar would accept it as a queue or topic name, else None:
    a span name or attribute never holds a name Zaqar refuses (escape
    sequences, newlines, kilobytes)."""
    if isinstance(name, str) and _QUEUE_NAME.fullmatch(name):
        return name
    return None


#: WSGI environ key: the falcon route template of the request, if routed.
ROUTE_ENVIRON = "zaqar_otel.route"
# Operations whose answer lists messages that waited in the queue.
_WAITED = frozenset(("list", "claim", "pop"))


class OperationMetrics(Protocol):
    """What the middleware hands each operation to (``zaqar_otel.metrics``)."""

    def operation(self, op_type: str, op_name: str, queue: str | None,
                  project: str | None, status: int, seconds: float, count: int,
                  ages: Sequence[float],
                  span_context: trace.SpanContext | None) -> None: ...


# The last object Zaqar's WSGI resources rendered as JSON in this context.
_rendered: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "zaqar_otel_rendered", default=None)


def capture_rendered(patches: patching.Patches) -> None:
    """Keep what ``zaqar.transport.utils.to_json`` renders (undone with
    ``patches``): the message dicts, with their ages, of the answer being
    made, at the cost of a context variable set."""
    from zaqar.transport import utils

    def keeping(original: Callable[[Any], str]) -> Callable[[Any], str]:
        @functools.wraps(original)
        def to_json(obj: Any) -> str:
            _rendered.set(obj)
            return original(obj)

        return to_json

    patches.patch(utils, "to_json", keeping)


def messages_in(rendered: Any) -> list[Any]:
    """The messages of a rendered answer (a list, claim, pop or one message)."""
    if isinstance(rendered, dict):
        found = rendered.get("messages")
        if isinstance(found, list):
            return found
        if "id" in rendered and "age" in rendered:
            return [rendered]
    return []


def _counted(found: tuple[str, str, SpanKind], req: Any, rendered: Any
             ) -> tuple[int, list[float]]:
    """(messages, their ages) of a successful operation."""
    op_type, op_name, _ = found
    if op_type == "send":
        if isinstance(rendered, dict) and isinstance(rendered.get("resources"), list):
            return len(rendered["resources"]), []
        return 0, []
    if op_type == "receive":
        messages = messages_in(rendered)
        ages = ([m["age"] for m in messages if isinstance(m, dict)
                 and isinstance(m.get("age"), (int, float))]
                if op_name in _WAITED else [])
        return len(messages), ages
    if op_name == "delete":
        if req.uri_template.endswith("}"):  # .../messages/{message_id}
            return 1, []
        return len(req.get_param_as_list("ids") or ()), []
    return 0, []  # a claim release settles no message


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
    if found and pop and _may_pop(found, route):
        return _POP
    return found


def _may_pop(found: tuple[str, str, SpanKind], route: str) -> bool:
    """A delete of the message collection: ``?pop=N`` makes it a receive."""
    return found[1] == "delete" and "{message_id}" not in route


class RouteOperations:
    """``operation_of`` a falcon request, kept by (method, route template):
    every request asks, and falcon has a few dozen templates. Only HTTP's
    own methods are kept: a client may send any token as its method (a 405
    answer)."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str | None], tuple[str, str, SpanKind] | None] = {}

    def __call__(self, req: Any) -> tuple[str, str, SpanKind] | None:
        key = (req.method, req.uri_template)
        try:
            found = self.kept[key]
        except KeyError:
            found = operation_of(*key)
            if key[0] in HTTP_METHODS:
                self.kept[key] = found
        if (found is not None and _may_pop(found, key[1] or "")
                and req.get_param("pop")):
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
    }
    queue = queue_name(destination)
    if queue is not None:
        attributes["messaging.destination.name"] = queue
    if project:
        attributes["zaqar.project.id"] = project
    if message_id:
        attributes["messaging.message.id"] = message_id
    span = tracer.start_span(f"{op_type} {queue}" if queue else op_type, kind=kind,
                             attributes=attributes)
    operation = Operation(span)
    tokens = (context.attach(trace.set_span_in_context(span)),
              _current.set(operation))
    return operation, tokens


def close_operation(operation: Operation, tokens: Any, status: int,
                    body: Any, log_failure: Callable[[], None]) -> None:
    """Describe the outcome (status, message ids) and end the span.

    Runs on the request thread: it never raises (``log_failure`` is called
    from the ``except`` block), and the context is put back whatever fails.
    """
    try:
        describe(operation.span, status, body)
        operation.span.end()
    except Exception:
        log_failure()
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
    """Falcon middleware: one operation span per message/claim request, and
    the measurements of every request when ``metrics`` is given.

    :param tracer: where operation spans start; None: nothing is traced.
    :param metrics: what each operation is handed to; None: no metrics.
    """

    def __init__(self, tracer: trace.Tracer | None,
                 metrics: OperationMetrics | None = None) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self._log_failure = patching.FailureLog(
            LOG, "a messaging operation span failed")
        self._operation_of = RouteOperations()

    def process_resource(self, req: Any, resp: Any, resource: Any,
                         params: dict[str, Any]) -> None:
        try:
            metrics = self._metrics
            if metrics is not None:
                req.env[ROUTE_ENVIRON] = req.uri_template
            traced = (self._tracer is not None
                      and trace.get_current_span().is_recording())
            if not traced and metrics is None:
                return  # untraced request: nothing to do
            found = self._operation_of(req)
            if found is None:
                return
            destination = params.get("queue_name") or params.get("topic_name") or ""
            # req.get_header("X-Project-ID"), without its name mangling.
            project = req.env.get("HTTP_X_PROJECT_ID")
            state = None
            if traced and self._tracer is not None:
                state = open_operation(self._tracer, found, destination, project,
                                       params.get("message_id"))
            _rendered.set(None)  # what an earlier answer rendered
            measured = None
            if metrics is not None:
                measured = (found, destination, project, perf_counter())
            # One attribute for both: a request without it pays one look-up.
            req.context.zaqar_otel_operation = (state, measured)
        except Exception:
            self._log_failure()

    def process_response(self, req: Any, resp: Any, resource: Any,
                         req_succeeded: bool) -> None:
        found = getattr(req.context, "zaqar_otel_operation", None)
        if found is None:
            return
        state, measured = found
        try:
            del req.context.zaqar_otel_operation
            code = getattr(resp, "status_code", None)  # falcon >= 4: an int
            status = code if isinstance(code, int) else int(
                str(resp.status).split()[0])
            if not req_succeeded and status < 400:
                status = 500  # raised, yet no error response was rendered
        except Exception:
            self._log_failure()
            status = 200
        rendered = _rendered.get() if status < 300 else None
        if measured is not None:
            self._measure(req, measured, status, rendered, state)
        if state is None:
            return
        try:
            operation, tokens = state
        except Exception:
            self._log_failure()
            return
        try:
            # The ids from what Zaqar rendered (``capture_rendered``); the
            # body is parsed again only when it came another way.
            _rendered.set(None)
            body = rendered
            if body is None:
                body = json.loads(resp.text) if resp.text and status < 300 else None
        except Exception:
            self._log_failure()
            body = None
        close_operation(operation, tokens, status, body, self._log_failure)

    def _measure(self, req: Any, measured: Any, status: int, rendered: Any,
                 state: Any) -> None:
        try:
            found, destination, project, started = measured
            seconds = perf_counter() - started
            _rendered.set(None)  # no reference kept past the request
            count, ages = _counted(found, req, rendered) if status < 300 else (0, [])
            span_context = state[0].span.get_span_context() if state else None
            assert self._metrics is not None  # measured only with metrics on
            self._metrics.operation(found[0], found[1], destination or None,
                                    project, status, seconds, count, ages,
                                    span_context)
        except Exception:
            self._log_failure()
