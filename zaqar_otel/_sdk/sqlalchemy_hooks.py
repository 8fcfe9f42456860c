"""The SQLAlchemy instrumentation's private hooks, in one place.

zaqar-otel's SQL spans (``backends/sql.py``) are the instrumentation's,
named by table, with SQLite's ``BEGIN`` folded into the statement that
follows and the stable operation and table read from the statement object.
The instrumentation has no public hook for these; what is used of it:

* ``EngineTracer._operation_name(db_name, statement)``: a span's name;
* ``EngineTracer._before_cur_exec``: the listener that starts a
  statement's span and keeps it in the execution context's ``_otel_span``,
  which its ``_after_cur_exec`` and ``_handle_error`` end;
* ``EngineTracer.__init__``'s arguments and ``_register_event_listener``:
  the listeners it adds to an engine and its pool;
* its module's ``_get_attributes_from_url``,
  ``_get_attributes_from_cursor_or_conn``,
  ``_get_db_name_from_cursor_or_conn``, ``_set_db_statement``,
  ``_set_db_system``, ``_set_db_operation`` and an EngineTracer's
  ``_sem_conv_opt_in_mode_db`` / ``_http``: what a statement span's
  attributes are made of, for ``statement_start``.

Each is checked before it is used (there, callable, the arguments
expected); on a release laid out otherwise the instrumentation's own code
runs, with one line (its own names; SQLite's ``BEGIN`` its own span).
``statement_start``, ``_before_cur_exec`` in fewer steps, exists only to
save CPU: it runs only on a release of ``TESTED`` (what tests/breadth
pins) whose helpers are all there; elsewhere the instrumentation's own
``_before_cur_exec`` starts the span and ``StatementHooks.on_span`` gives
it zaqar-otel's names: the same span, name and attributes (but for a
``db.operation.name`` that ``on_span`` cannot take off a started span).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from zaqar_otel import patching
from zaqar_otel._sdk import layout
from zaqar_otel._sdk.attributes import KeptAttributes

LOG = logging.getLogger(__name__)

#: The ``opentelemetry-instrumentation-sqlalchemy`` releases (major, minor)
#: ``statement_start`` was tested with: 0.66b0 and 0.66b1.
TESTED = ((0, 66),)
_DISTRIBUTION = "opentelemetry-instrumentation-sqlalchemy"

_HELPERS = ("_get_attributes_from_url", "_get_attributes_from_cursor_or_conn",
            "_get_db_name_from_cursor_or_conn", "_set_db_statement",
            "_set_db_system", "_set_db_operation")
_KEPT_MAX = 512  # URLs and statements whose attributes are kept


@dataclass(frozen=True)
class StatementHooks:
    """What zaqar-otel does around the instrumentation's statement spans.

    ``skip(conn, statement)``: True for a statement that gets no span (it
    runs untraced; ``started`` tells where it went); ``attributes(attrs,
    context)``: changes a new span's attributes in place before it starts
    (``context``: SQLAlchemy's execution context); ``on_span(span,
    context)``: the same on a span the instrumentation's own listener
    started; ``started(span, conn)``: after each statement's span started
    (span None when none was)."""

    skip: Callable[[Any, Any], bool]
    attributes: Callable[[dict[str, Any], Any], None]
    on_span: Callable[[Any, Any], None]
    started: Callable[[Any, Any], None]


@functools.cache
def tested_release() -> bool:
    """Whether the installed instrumentation is a release of ``TESTED``."""
    try:
        return layout.release(metadata.version(_DISTRIBUTION)) in TESTED
    except metadata.PackageNotFoundError:
        return False


def instrumentation_enabled() -> Callable[[], bool]:
    """``is_instrumentation_enabled``, read in one step where the API's
    layout is known (``layout.suppression_slot``): an untraced request
    asks it for every statement."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    slot = layout.suppression_slot()
    if slot is None:
        return is_instrumentation_enabled
    get, (first, second) = slot[0].get, slot[1]

    def enabled() -> bool:
        current = get()
        return not (current.get(first) or current.get(second))

    return enabled


def statement_start(engine_module: Any,
                    attributes: Callable[[dict[str, Any], Any], None],
                    ) -> Callable[..., Any] | None:
    """The instrumentation's ``_before_cur_exec`` without commenter, in
    fewer steps: the attributes of an engine's URL are read once, a
    statement's attribute set (``attributes`` applied) once per statement
    text, and the span starts with them (the same name, kind, attributes
    and parent; it is not made current, which only the commenter needed).
    None on an untested release or one without a helper this needs."""
    if not tested_release() or not all(
            callable(getattr(engine_module, h, None)) for h in _HELPERS):
        return None
    from_url = engine_module._get_attributes_from_url
    from_cursor = engine_module._get_attributes_from_cursor_or_conn
    db_name_of = engine_module._get_db_name_from_cursor_or_conn
    set_statement = engine_module._set_db_statement
    set_system = engine_module._set_db_system
    set_operation = engine_module._set_db_operation
    client = engine_module.trace.SpanKind.CLIENT
    # id(url) -> (url, its attributes); (id(url), db name, statement) -> the
    # span's name and attributes. Values hold their URL: an id is not reused
    # while it is kept.
    by_url: dict[int, tuple[Any, dict[str, Any]]] = {}
    by_statement: dict[tuple[int, Any, str], tuple[Any, str, dict[str, Any]]] = {}

    def start(self: Any, conn: Any, cursor: Any, statement: Any,
              context: Any) -> None:
        url = conn.engine.url
        db_mode = self._sem_conv_opt_in_mode_db
        known = by_url.get(id(url))
        if known is not None and known[0] is url:
            attrs, cacheable = known[1], True
        else:
            http_mode = self._sem_conv_opt_in_mode_http
            attrs, found = from_url(url, db_mode, http_mode)
            if not found:
                attrs = from_cursor(self.vendor, conn, cursor, attrs, db_mode,
                                    http_mode)
            # PostgreSQL's then come from the connection: read every time.
            cacheable = found or self.vendor != "postgresql"
            if cacheable:
                if len(by_url) >= _KEPT_MAX:
                    by_url.clear()
                by_url[id(url)] = (url, attrs)
        db_name = db_name_of(self.vendor, conn, cursor)
        key = ((id(url), db_name, statement)
               if cacheable and type(statement) is str else None)
        kept = by_statement.get(key) if key is not None else None
        if kept is not None and kept[0] is url:
            _, name, span_attrs = kept
        else:
            name = self._operation_name(db_name, statement)
            span_attrs = dict(attrs)
            set_statement(span_attrs, statement, db_mode)
            set_system(span_attrs, self.vendor, db_mode)
            set_operation(span_attrs, name, db_mode)
            attributes(span_attrs, context)
            if key is not None:
                if len(by_statement) >= _KEPT_MAX:
                    by_statement.clear()
                span_attrs = KeptAttributes(span_attrs)
                by_statement[key] = (url, name, span_attrs)
        # Copied by the span: the kept dict is never changed.
        context._otel_span = self.tracer.start_span(name, kind=client,
                                                    attributes=span_attrs)

    return start


def statement_listener(original: Callable[..., Any], hooks: StatementHooks
                       ) -> Callable[..., Any]:
    """``EngineTracer._before_cur_exec`` with ``hooks`` around it:
    ``statement_start`` where it applies (commenter off), else ``original``
    and ``hooks.on_span`` on the span it started."""
    from opentelemetry.instrumentation.sqlalchemy import engine as engine_module

    start = statement_start(engine_module, hooks.attributes)
    enabled = instrumentation_enabled()
    skip, on_span, started = hooks.skip, hooks.on_span, hooks.started

    def _before_cur_exec(self: Any, conn: Any, cursor: Any, statement: Any,
                         params: Any, context: Any, executemany: bool) -> Any:
        if skip(conn, statement):
            return statement, params
        if start is not None and not self.enable_commenter:
            if not enabled():
                return statement, params
            start(self, conn, cursor, statement, context)
            result = statement, params
        else:
            result = original(self, conn, cursor, statement, params, context,
                              executemany)
            on_span(getattr(context, "_otel_span", None), context)
        started(getattr(context, "_otel_span", None), conn)
        return result

    return _before_cur_exec


def hook_statements(patches: patching.Patches, hooks: StatementHooks) -> bool:
    """Put ``hooks`` around every statement span of the instrumentation
    (``statement_listener``); False, with one line, on a release without
    ``EngineTracer._before_cur_exec``."""
    from opentelemetry.instrumentation.sqlalchemy import engine

    tracer_class = getattr(engine, "EngineTracer", None)
    if not callable(getattr(tracer_class, "_before_cur_exec", None)):
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._before_cur_exec; SQLite's BEGIN keeps its span")
        return False
    patches.patch(tracer_class, "_before_cur_exec",
                  lambda original: statement_listener(original, hooks))
    return True


def name_spans(patches: patching.Patches, name: Callable[[str, Any], str]) -> bool:
    """Name the instrumentation's statement spans ``name(vendor,
    statement)`` (its own name where that raises); False, with one line, on
    a release without ``EngineTracer._operation_name``."""
    from opentelemetry.instrumentation.sqlalchemy import engine

    tracer_class = getattr(engine, "EngineTracer", None)
    if not callable(getattr(tracer_class, "_operation_name", None)):
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._operation_name; SQL spans keep its own names")
        return False

    def by_name(original: Callable[..., str]) -> Callable[..., str]:
        def _operation_name(self: Any, db_name: Any, statement: Any) -> str:
            try:
                return name(str(getattr(self, "vendor", "") or "sql"), statement)
            except Exception:
                return original(self, db_name, statement)

        return _operation_name

    patches.patch(tracer_class, "_operation_name", by_name)
    return True


def _registering_only(original: Callable[..., None], events: frozenset[str]
                      ) -> Callable[..., None]:
    from opentelemetry.metrics import NoOpUpDownCounter

    def __init__(self: Any, tracer: Any, engine: Any, connections_usage: Any,
                 *args: Any, **kwargs: Any) -> None:
        if isinstance(connections_usage, NoOpUpDownCounter):
            register = type(self)._register_event_listener

            def register_measured(target: Any, identifier: str, *rest: Any,
                                  **kw: Any) -> None:
                if identifier not in events:
                    register(target, identifier, *rest, **kw)

            self._register_event_listener = register_measured
        try:
            original(self, tracer, engine, connections_usage, *args, **kwargs)
        finally:
            self.__dict__.pop("_register_event_listener", None)

    return __init__


def skip_unmeasured_listeners(patches: patching.Patches, events: frozenset[str]
                              ) -> bool:
    """Make the instrumentation register no listener for ``events`` when
    its connection counter is the no-op one; False, with one line, on a
    release whose ``EngineTracer.__init__`` takes other arguments or has no
    ``_register_event_listener`` (then the listeners stay)."""
    from opentelemetry.instrumentation.sqlalchemy import engine

    tracer_class = getattr(engine, "EngineTracer", None)
    try:
        init: Any = getattr(tracer_class, "__init__", None)
        names = list(inspect.signature(init).parameters)
    except (TypeError, ValueError, AttributeError):
        names = []
    if (names[:4] != ["self", "tracer", "engine", "connections_usage"]
            or not callable(getattr(tracer_class, "_register_event_listener", None))):
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation's EngineTracer "
                 "differs; its connection counters keep their pool listeners")
        return False
    patches.patch(tracer_class, "__init__",
                  lambda original: _registering_only(original, events))
    return True
