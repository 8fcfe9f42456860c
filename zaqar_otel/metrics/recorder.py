"""Zaqar's metrics: what one request and one messaging operation record.

The WSGI entry calls ``request`` once per request, traced or not; the
messaging middleware calls ``operation`` once per message or claim
operation. Each is a few dict look-ups and additions (``instruments``); the
attributes of a series are built the first time it is seen::

    http.server.request.duration        histogram, s: http.request.method,
        url.scheme, http.route, http.response.status_code, error.type,
        network.protocol.version (the stable HTTP conventions: with
        OTEL_SEMCONV_STABILITY_OPT_IN http or http/dup)
    http.server.duration                histogram, ms: http.method,
        http.scheme, http.route, http.status_code, http.flavor (the old
        ones, as the wsgi instrumentation names them: without opt-in, or
        http/dup)
    messaging.client.operation.duration histogram, s: messaging.system,
        messaging.operation.type, messaging.operation.name,
        messaging.destination.name, error.type (a 4xx or 5xx answer)
    messaging.client.sent.messages      counter, {message}: posted and accepted
    messaging.client.consumed.messages  counter, {message}: returned by a
        list, get, claim or pop
    zaqar.messaging.settled.messages    counter, {message}: deleted
    zaqar.messaging.wait.duration       histogram, s: a message's age when a
        claim, pop or listing returns it

Queue (``messaging.destination.name``) and project (``zaqar.project.id``)
attributes are bounded by ``cardinality.Destinations``; the other
attributes take a small fixed set of values. A duration point of a sampled
request carries its span as an exemplar::

    recorder = Recorder(Destinations(), "trace_based", conventions)
    recorder.request(environ, "/v2/queues/{queue_name}", "200 OK", 0.004, None, None)
    recorder.operation("receive", "claim", "orders", "p1", 201, 0.003, 2, [0, 4], None)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import Metric
from opentelemetry.trace import SpanContext

from zaqar_otel._sdk import layout
from zaqar_otel.metrics import instruments
from zaqar_otel.metrics.cardinality import Destination, Destinations
from zaqar_otel.redact import HTTP_METHODS

SYSTEM = "zaqar"
HTTP_DURATION = "http.server.request.duration"
#: The old HTTP conventions' server duration (ms), as the wsgi
#: instrumentation records it without OTEL_SEMCONV_STABILITY_OPT_IN.
OLD_HTTP_DURATION = "http.server.duration"
OPERATION_DURATION = "messaging.client.operation.duration"
SENT = "messaging.client.sent.messages"
CONSUMED = "messaging.client.consumed.messages"
SETTLED = "zaqar.messaging.settled.messages"
WAIT = "zaqar.messaging.wait.duration"

OTHER_METHOD = "_OTHER"
_SCHEMES = {"http": "http", "https": "https"}
_PROTOCOLS = {"HTTP/1.0": "1.0", "HTTP/1.1": "1.1", "HTTP/2": "2", "HTTP/2.0": "2"}

# (method, scheme, route, status or "", error type or "", protocol version)
_HttpKey = tuple[str, str | None, str | None, str, str, str | None]


def _http_attributes(key: _HttpKey) -> dict[str, Any]:
    method, scheme, route, status, error, version = key
    attributes: dict[str, Any] = {"http.request.method": method}
    if scheme:
        attributes["url.scheme"] = scheme
    if route:
        attributes["http.route"] = route
    if status.isdigit():
        attributes["http.response.status_code"] = int(status)
        if status >= "500":
            # The server conventions: a 5xx is an error, named by its code.
            attributes["error.type"] = status
    if error:
        attributes["error.type"] = error
    if version:
        attributes["network.protocol.version"] = version
    return attributes


def _old_http_attributes(key: _HttpKey) -> dict[str, Any]:
    """The old conventions' names; no error.type (they had none)."""
    method, scheme, route, status, _, version = key
    attributes: dict[str, Any] = {"http.method": method}
    if scheme:
        attributes["http.scheme"] = scheme
    if route:
        attributes["http.route"] = route
    if status.isdigit():
        attributes["http.status_code"] = int(status)
    if version:
        attributes["http.flavor"] = version
    return attributes


def _destination_attributes(attributes: dict[str, Any],
                            destination: Destination) -> dict[str, Any]:
    queue, project = destination
    if queue is not None:
        attributes["messaging.destination.name"] = queue
    if project is not None:
        attributes["zaqar.project.id"] = project
    return attributes


def _operation_attributes(key: tuple[str, str, Destination, int]) -> dict[str, Any]:
    op_type, op_name, destination, failed_status = key
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": op_type,
        "messaging.operation.name": op_name,
    }
    if failed_status:
        attributes["error.type"] = str(failed_status)
    return _destination_attributes(attributes, destination)


def _message_attributes(key: tuple[str, Destination]) -> dict[str, Any]:
    op_name, destination = key
    return _destination_attributes(
        {"messaging.system": SYSTEM, "messaging.operation.name": op_name},
        destination)


class Recorder:
    """The instruments of one process, and the two calls that feed them.

    :param destinations: what messaging measurements are attributed to.
    :param exemplar_filter: see ``instruments.Histogram``.
    :param conventions: the HTTP semantic-convention mode the request
        duration follows (set-up hands down the process's); None: stable.
    """

    def __init__(self, destinations: Destinations,
                 exemplar_filter: str = instruments.TRACE_BASED,
                 conventions: layout.Conventions | None = None) -> None:
        self.destinations = destinations
        boundaries = instruments.DURATION_BOUNDARIES
        conventions = conventions or layout.STABLE_CONVENTIONS
        # (histogram, factor from seconds): one each for the stable and the
        # old names, as the mode asks (both: http/dup).
        durations: list[tuple[instruments.Histogram, float]] = []
        if conventions.http_new:
            durations.append((instruments.Histogram(
                HTTP_DURATION, "s", "Duration of HTTP server requests.",
                boundaries, _http_attributes, exemplar_filter), 1.0))
        if conventions.http_old:
            durations.append((instruments.Histogram(
                OLD_HTTP_DURATION, "ms",
                "Measures the duration of inbound HTTP requests.",
                instruments.OLD_HTTP_BOUNDARIES, _old_http_attributes,
                exemplar_filter), 1000.0))
        self._durations = tuple(durations)
        #: The request duration of the mode (the stable one in http/dup).
        self.http_duration = durations[0][0]
        self.operation_duration = instruments.Histogram(
            OPERATION_DURATION, "s",
            "Duration of messaging operations (post, list, get, claim, pop, "
            "delete, release) as Zaqar served them.", boundaries,
            _operation_attributes, exemplar_filter)
        self.sent = instruments.Counter(
            SENT, "{message}", "Messages posted to Zaqar and accepted.",
            _message_attributes)
        self.consumed = instruments.Counter(
            CONSUMED, "{message}",
            "Messages Zaqar returned to consumers (list, get, claim, pop).",
            _message_attributes)
        self.settled = instruments.Counter(
            SETTLED, "{message}", "Messages deleted by consumers.",
            _message_attributes)
        self.wait = instruments.Histogram(
            WAIT, "s",
            "Age of a message when a claim, pop or listing returned it: its "
            "wait in the queue, in whole seconds as Zaqar counts it.",
            instruments.WAIT_BOUNDARIES, _message_attributes, exemplar_filter)
        self._all: tuple[instruments.Histogram | instruments.Counter, ...] = (
            *(h for h, _ in self._durations), self.operation_duration, self.sent,
            self.consumed, self.settled, self.wait)
        self._pid = os.getpid()
        self._after_fork: list[Callable[[], None]] = []
        self._fork_lock = threading.Lock()

    # -- the hot path ----------------------------------------------------------

    def request(self, environ: Mapping[str, Any], route: str | None,
                status: str | None, seconds: float, error: BaseException | None,
                span_context: SpanContext | None) -> None:
        """One HTTP request: ``status`` is the status line sent (None if none)."""
        if os.getpid() != self._pid:
            # A worker forked after set-up (uwsgi runs no at-fork hooks): its
            # own series from zero, and its own export thread.
            self._forked()
        method = environ.get("REQUEST_METHOD", "")
        if method not in HTTP_METHODS:
            # A client cannot make series by inventing methods.
            method = OTHER_METHOD
        key = (method, _SCHEMES.get(environ.get("wsgi.url_scheme", "")), route,
               status[:3] if status else "",
               type(error).__qualname__ if error is not None else "",
               _PROTOCOLS.get(environ.get("SERVER_PROTOCOL", "")))
        for histogram, factor in self._durations:
            histogram.record(key, seconds * factor, span_context)

    def operation(self, op_type: str, op_name: str, queue: str | None,
                  project: str | None, status: int, seconds: float, count: int,
                  ages: Sequence[float], span_context: SpanContext | None) -> None:
        """One messaging operation of ``count`` messages, answered ``status``.

        ``ages``: the messages' ages (s) when they were returned, for the
        wait histogram (a claim, pop or listing).
        """
        destination = self.destinations.of(queue, project)
        failed = status if status >= 400 else 0
        self.operation_duration.record((op_type, op_name, destination, failed),
                                       seconds, span_context)
        if failed or count <= 0:
            return
        key = (op_name, destination)
        if op_type == "send":
            self.sent.add(key, count)
        elif op_type == "receive":
            self.consumed.add(key, count)
            if ages:
                self.wait.record_many(key, ages, span_context)
        elif op_name == "delete":
            self.settled.add(key, count)

    # -- export and process life -----------------------------------------------

    def collect(self, now_ns: int) -> list[Metric]:
        """Every instrument's points so far (cumulative)."""
        return [metric for instrument in self._all
                if (metric := instrument.collect(now_ns)) is not None]

    def series_count(self) -> int:
        return sum(instrument.series_count() for instrument in self._all)

    def after_fork(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` in a forked worker, once it records (see request)."""
        self._after_fork.append(callback)

    def _forked(self) -> None:
        with self._fork_lock:  # the worker's first requests may race here
            if self._pid == os.getpid():
                return
            for instrument in self._all:
                instrument.reset()
            self.destinations.reset()
            for callback in self._after_fork:
                callback()
            self._pid = os.getpid()
