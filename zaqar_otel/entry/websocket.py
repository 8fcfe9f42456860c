"""Requests over Zaqar's websocket API, traced like WSGI ones.

Zaqar's OSProfiler support stops at WSGI. With ``[profiler]
trace_websocket_transport`` each websocket API request (``{"action": ...,
"headers": {...}, "body": {...}}``) gets a SERVER span ``websocket <action>``
(an action Zaqar does not know: ``websocket _OTHER``, invariant 8);
its trace context comes from the request's ``headers`` section, both header
families, under the same trust rules as WSGI (``zaqar_otel.sampling``).
Message and claim actions get the same messaging operation spans, and so
the same producer -> consumer links. The span names its protocol as the
process's HTTP semantic-convention mode does (``net.protocol.name``
without ``OTEL_SEMCONV_STABILITY_OPT_IN``, ``network.protocol.name`` with
``http``, both with ``http/dup``)::

    instrument_handler(entry, patches, conventions)   # the process's Entry
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
from collections.abc import Callable
from contextvars import Token
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from osprofiler import profiler

from zaqar_otel import patching, redact
from zaqar_otel._sdk import layout
from zaqar_otel.entry import lifecycle
from zaqar_otel.messaging import operations

LOG = logging.getLogger(__name__)

_C, _P, _S = SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.CLIENT
OPERATIONS: dict[str, tuple[str, str, SpanKind]] = {
    "message_post": ("send", "post", _P),
    "message_list": ("receive", "list", _C),
    "message_get": ("receive", "get", _C),
    "message_get_many": ("receive", "get", _C),
    "message_delete": ("settle", "delete", _S),
    "message_delete_many": ("settle", "delete", _S),
    "claim_create": ("receive", "claim", _C),
    "claim_delete": ("settle", "release", _S),
}


#: The actions of Zaqar's websocket API (``zaqar.api.v2.request.RequestSchema``,
#: the same in every release zaqar-otel supports). Span names and the
#: ``zaqar.websocket.action`` attribute come from this set only: a client's
#: action is any text (escape sequences, megabytes), answered 400.
ACTIONS = frozenset((
    "authenticate", "check_node_health", "get_home_doc", "ping_node",
    "queue_create", "queue_delete", "queue_get", "queue_get_stats", "queue_list",
    "queue_purge",
    "message_delete", "message_delete_many", "message_get", "message_get_many",
    "message_list", "message_post",
    "claim_create", "claim_delete", "claim_get", "claim_update",
    "subscription_create", "subscription_delete", "subscription_get",
    "subscription_list",
    "pool_create", "pool_delete", "pool_get", "pool_list", "pool_update",
    "flavor_create", "flavor_delete", "flavor_get", "flavor_list", "flavor_update",
))
#: What any other action is named (the semantic conventions' ``_OTHER``).
OTHER_ACTION = "_OTHER"


def action_name(action: object) -> str:
    """``action`` if Zaqar knows it, else ``_OTHER``."""
    return action if isinstance(action, str) and action in ACTIONS else OTHER_ACTION


#: The protocol attribute of a websocket span, by mode (stable, old).
_PROTOCOL_NEW = {"network.protocol.name": "websocket"}
_PROTOCOL_OLD = {"net.protocol.name": "websocket"}


def protocol_attributes(conventions: layout.Conventions) -> dict[str, str]:
    """The websocket span's protocol attribute(s) in ``conventions``' HTTP mode."""
    return {**(_PROTOCOL_OLD if conventions.http_old else {}),
            **(_PROTOCOL_NEW if conventions.http_new else {})}


def _begin_with(entry: lifecycle.Entry, headers: Any, action: object,
                protocol: dict[str, str] = _PROTOCOL_NEW,
                ) -> tuple[trace.Span | None, Token[Context]]:
    """The entry of one websocket request with these ``headers``."""
    name = action_name(action)
    carrier = ({str(k).lower(): str(v) for k, v in headers.items()}
               if isinstance(headers, dict) else {})

    def describe() -> tuple[str, dict[str, Any]]:
        return f"websocket {name}", {**protocol, "zaqar.websocket.action": name}

    return entry.begin(propagate.extract(carrier), describe)


def _begin(entry: lifecycle.Entry, req: Any,
           protocol: dict[str, str] = _PROTOCOL_NEW) -> lifecycle.Begun:
    return _begin_with(entry, req._headers, req._action, protocol)


def _process(tracer: trace.Tracer, original: Any, handler: Any, req: Any,
             protocol: Any, span: trace.Span,
             log_failure: patching.FailureLog) -> Any:
    operation = None
    try:
        body = req._body if isinstance(req._body, dict) else {}
        found = OPERATIONS.get(str(req._action))
        if found and body.get("pop"):
            found = ("receive", "pop", _C)
        if found:
            headers = req._headers if isinstance(req._headers, dict) else {}
            operation = operations.open_operation(
                tracer, found, str(body.get("queue_name", "")),
                headers.get("X-Project-ID"), body.get("message_id"))
    except Exception:
        log_failure()
    resp = None
    try:
        resp = original(handler, req, protocol)
        return resp
    finally:
        # Zaqar's answer (or exception) is what the client gets, whatever
        # describing it does.
        status = 500
        try:
            if resp is not None:
                status = _status_of(resp)
        except Exception:
            log_failure()
        if operation is not None:
            operations.close_operation(*operation, status,
                                      getattr(resp, "_body", None), log_failure)
        try:
            _note_status(span, status)
        except Exception:
            log_failure()


def _status_of(resp: Any) -> int:
    """The status of Zaqar's websocket answer ``resp``."""
    return int(resp._headers.get("status", 200))


def _note_status(span: trace.Span, status: int) -> None:
    """The answer's status on the message's span; 5xx is an error."""
    span.set_attribute("zaqar.websocket.status", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"status {status}"))


# The SERVER span of the websocket message being handled in this context.
_message_span: contextvars.ContextVar[trace.Span | None] = contextvars.ContextVar(
    "zaqar_otel_websocket_message", default=None)


def _peek(payload: Any, is_binary: bool) -> dict[str, Any]:
    """The request dict of a websocket message, or {} (Zaqar answers 400)."""
    try:
        if is_binary:
            import msgpack

            found = msgpack.unpackb(payload)
        else:
            found = json.loads(payload.decode() if isinstance(payload, bytes)
                               else payload)
    except Exception:
        return {}
    return found if isinstance(found, dict) else {}


def _message_begin(entry: lifecycle.Entry, payload: Any, is_binary: bool,
                   protocol: dict[str, str] = _PROTOCOL_NEW,
                   ) -> tuple[trace.Span | None, Token[Context]]:
    request = _peek(payload, is_binary)
    return _begin_with(entry, request.get("headers"), request.get("action"),
                       protocol)


def instrument_handler(entry: lifecycle.Entry, patches: patching.Patches,
                       conventions: layout.Conventions | None = None) -> None:
    """Trace every websocket message (idempotent; undone with ``patches``).

    ``MessagingProtocol.onMessage`` is the entry: every message Zaqar
    answers, also those it refuses before its API handler (a validation
    error, an unauthenticated client), gets its SERVER span, as a WSGI 4xx
    does. ``Handler.process_request`` adds the messaging operation span;
    ``_send_response`` notes the status sent.
    """
    from zaqar.api import handler
    from zaqar.transport.websocket import protocol as websocket_protocol

    tracer = entry.tracer
    protocol = (_PROTOCOL_NEW if conventions is None
                else protocol_attributes(conventions))
    log_failure = patching.FailureLog(
        LOG, "tracing a websocket request failed; it goes on untraced")

    def traced_message(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def onMessage(self: Any, payload: Any, isBinary: bool) -> Any:  # noqa: N802, N803
            try:
                span, token = _message_begin(entry, payload, isBinary, protocol)
            except Exception:
                log_failure()
                return original(self, payload, isBinary)
            if span is None:
                try:
                    return original(self, payload, isBinary)
                finally:
                    context.detach(token)
            current = _message_span.set(span)
            try:
                return original(self, payload, isBinary)
            except BaseException as exc:
                redact.record_error(span, exc)
                raise
            finally:
                _message_span.reset(current)
                lifecycle.end_span(span, log_failure)
                profiler.clean()
                context.detach(token)

        return onMessage

    def noting_status(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def _send_response(self: Any, resp: Any, in_binary: bool) -> Any:
            span = _message_span.get()
            if span is not None:
                try:
                    _note_status(span, _status_of(resp))
                except Exception:
                    log_failure()
            return original(self, resp, in_binary)

        return _send_response

    def traced(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def process_request(self: Any, req: Any, protocol: Any) -> Any:
            span = _message_span.get()
            if span is not None:  # the message's span is open: add the operation
                return _process(tracer, original, self, req, protocol, span,
                                log_failure)
            # Called other than from a websocket message: its own entry.
            try:
                span, token = _begin(entry, req, protocol)
            except Exception:
                log_failure()
                return original(self, req, protocol)
            try:
                if span is None:
                    return original(self, req, protocol)
                return _process(tracer, original, self, req, protocol, span,
                                log_failure)
            except BaseException as exc:
                if span is not None:
                    redact.record_error(span, exc)
                raise
            finally:
                if span is not None:
                    lifecycle.end_span(span, log_failure)
                    profiler.clean()
                context.detach(token)

        return process_request

    patches.patch(websocket_protocol.MessagingProtocol, "onMessage", traced_message)
    patches.patch(websocket_protocol.MessagingProtocol, "_send_response",
                  noting_status)
    patches.patch(handler.Handler, "process_request", traced)
