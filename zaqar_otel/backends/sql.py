"""SQL span names as the database conventions name them: ``SELECT Queues``.

The SQLAlchemy instrumentation names a span by the statement's first word
and the database name, which for SQLite is the file's path
(``BEGIN /var/lib/zaqar/zaqar.sqlite``). The conventions ask for the
operation and the table (``{db.operation.name} {db.collection.name}``), or
the operation alone. ``span_name`` reads both from the statement SQLAlchemy
generated (no values: it only looks at keywords and the first table), and
``name_spans_by_table`` makes the instrumentation use it::

    span_name('SELECT "Queues".id FROM "Queues" WHERE ...', "sqlite")
    # 'SELECT Queues'

On SQLite, oslo.db emits its own ``BEGIN`` before the first statement of
each transaction (pysqlite's is turned off), so half of Zaqar's SQL spans
would be ``BEGIN``. ``name_spans_by_table`` also folds it into the statement
that follows on the same connection: no span of its own, an event ``BEGIN``
on the statement's span at the time it was issued. What is lost: the
BEGIN's own duration (microseconds: a deferred BEGIN takes no lock), and a
BEGIN that fails shows as the error of the trace point around it, not as a
span of its own.

The statement spans themselves take fewer steps than the instrumentation's
(``_statement_span``): an engine URL's attributes are read once, a
statement's names and attributes once per statement text, the same span.

Under the stable database conventions (``OTEL_SEMCONV_STABILITY_OPT_IN``
``database`` or ``database/dup``) the instrumentation would put the span's
name in ``db.operation.name`` too. The stable SQL conventions give
``db.operation.name`` and ``db.collection.name`` only from a higher-level
API naming one operation and one table, never parsed from the query text;
SQLAlchemy's statement objects are that API (``insert(Queues)``), so
``construct_names`` reads them from the object the statement was compiled
from: ``INSERT`` and ``Queues``, no collection for a SELECT of several
tables, neither for a text statement. The old ``db.operation`` (no opt-in,
or ``/dup``) keeps the span's name, as before.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from time import time_ns
from typing import Any

from zaqar_otel import patching
from zaqar_otel._sdk import layout

LOG = logging.getLogger(__name__)

_LEADING_COMMENTS = re.compile(r"^\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*", re.S)
_TABLE = re.compile(r'\b(?:FROM|INTO|JOIN|TABLE)\s+[`"\[]?([\w.$]+)', re.I)
_FIRST_NAME = re.compile(r'\s*[`"\[]?([\w.$]+)')
_STRING_LITERALS = re.compile(r"'(?:[^']|'')*'")
_WITH_TABLE = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE",
                         "CREATE", "DROP", "ALTER", "TRUNCATE"))


def span_name(statement: object, vendor: str) -> str:
    """``OPERATION table``, ``OPERATION``, or ``vendor`` for no statement."""
    if not isinstance(statement, str):
        return vendor
    words = _LEADING_COMMENTS.sub("", statement, count=1).split(None, 1)
    if not words:
        return vendor
    operation = words[0].upper()
    if operation in _WITH_TABLE and len(words) > 1:
        # Literals may hold anything, "FROM" included: never searched.
        rest = _STRING_LITERALS.sub("''", words[1])
        table = (_FIRST_NAME.match(rest) if operation == "UPDATE"
                 else _TABLE.search(rest))
        if table:
            return f"{operation} {table.group(1)}"
    return operation


_NAMES_MAX = 512  # statement -> span name kept (the statements repeat)


def _by_table(original: Callable[..., str]) -> Callable[..., str]:
    names: dict[tuple[str, str], str] = {}

    def _operation_name(self: Any, db_name: Any, statement: Any) -> str:
        vendor = str(getattr(self, "vendor", "") or "sql")
        if type(statement) is str:
            found = names.get((statement, vendor))
            if found is not None:
                return found
        try:
            name = span_name(statement, vendor)
        except Exception:
            return original(self, db_name, statement)
        if type(statement) is str:
            if len(names) >= _NAMES_MAX:
                names.clear()
            names[(statement, vendor)] = name
        return name

    return _operation_name


#: The stable names of an SQL operation and its table.
DB_OPERATION_NAME = "db.operation.name"
DB_COLLECTION_NAME = "db.collection.name"


_OPERATIONS = (("is_insert", "INSERT"), ("is_update", "UPDATE"),
               ("is_delete", "DELETE"), ("is_select", "SELECT"))


def construct_names(context: Any) -> tuple[str | None, str | None]:
    """(operation, table) of the SQLAlchemy statement object the executed
    statement was compiled from (``context.compiled.statement``): ``INSERT``,
    ``UPDATE``, ``DELETE`` with their table, ``SELECT`` with its one table
    (None for a join, a subquery or no table); (None, None) for a text
    statement or DDL. A table in a schema is ``schema.table``."""
    construct = getattr(getattr(context, "compiled", None), "statement", None)
    if construct is None:
        return None, None
    operation = next((word for flag, word in _OPERATIONS
                      if getattr(construct, flag, False) is True), None)
    if operation is None:
        return None, None
    if operation == "SELECT":
        froms = getattr(construct, "get_final_froms", None)
        found: Any = froms() if callable(froms) else ()
        table = found[0] if len(found) == 1 else None
    else:
        table = getattr(construct, "table", None)
    name = getattr(table, "fullname", None)  # Table / TableClause, not an alias
    return operation, name if isinstance(name, str) and name else None


def stable_operation(attributes: dict[str, Any], context: Any) -> None:
    """Where the instrumentation gave ``db.operation.name`` (the stable
    database conventions), make it the operation alone and add
    ``db.collection.name``; the old names are left as they are."""
    if DB_OPERATION_NAME not in attributes:
        return
    try:
        operation, table = construct_names(context)
    except Exception:
        _log_operation_failure()
        operation = table = None
    if operation is None:
        del attributes[DB_OPERATION_NAME]
    else:
        attributes[DB_OPERATION_NAME] = operation
    if table is not None:
        attributes[DB_COLLECTION_NAME] = table


BEGIN = "BEGIN"  # what oslo.db executes on SQLite
# (id of the SQLAlchemy Connection, when) of a BEGIN not shown yet.
_pending_begin: contextvars.ContextVar[tuple[int, int] | None] = (
    contextvars.ContextVar("zaqar_otel_sql_begin", default=None))


def _statement_span(engine_module: Any) -> Callable[..., Any] | None:
    """The instrumentation's ``_before_cur_exec`` without commenter, in
    fewer steps: the attributes of an engine's URL are read once, a
    statement's attribute set once per statement text, and the span starts
    with them (the same name, kind, attributes and parent; it is not made
    current, which only the commenter needed). None when the
    instrumentation lacks a helper this needs."""
    helpers = ("_get_attributes_from_url", "_get_attributes_from_cursor_or_conn",
               "_get_db_name_from_cursor_or_conn", "_set_db_statement",
               "_set_db_system", "_set_db_operation")
    if not all(callable(getattr(engine_module, h, None)) for h in helpers):
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
                if len(by_url) >= _NAMES_MAX:
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
            stable_operation(span_attrs, context)
            if key is not None:
                if len(by_statement) >= _NAMES_MAX:
                    by_statement.clear()
                by_statement[key] = (url, name, span_attrs)
        # Copied by the span: the kept dict is never changed.
        context._otel_span = self.tracer.start_span(name, kind=client,
                                                    attributes=span_attrs)

    return start


def _folding_begin(original: Callable[..., Any]) -> Callable[..., Any]:
    from opentelemetry.instrumentation.sqlalchemy import engine as engine_module

    start = _statement_span(engine_module)
    is_instrumentation_enabled = _enabled_check()

    def _before_cur_exec(self: Any, conn: Any, cursor: Any, statement: Any,
                         params: Any, context: Any, executemany: bool) -> Any:
        if statement == BEGIN:
            if is_instrumentation_enabled():
                _pending_begin.set((id(conn), time_ns()))
            return statement, params
        if start is not None and not self.enable_commenter:
            if not is_instrumentation_enabled():
                return statement, params
            start(self, conn, cursor, statement, context)
            result = statement, params
        else:
            result = original(self, conn, cursor, statement, params, context,
                              executemany)
            _stable_operation_on_span(getattr(context, "_otel_span", None), context)
        pending = _pending_begin.get()
        if pending is not None:
            _pending_begin.set(None)
            try:
                span = getattr(context, "_otel_span", None)
                if (pending[0] == id(conn) and span is not None
                        and span.is_recording()):
                    span.add_event(BEGIN, timestamp=pending[1])
            except Exception:
                _log_begin_failure()
        return result

    return _before_cur_exec


def _stable_operation_on_span(span: Any, context: Any) -> None:
    """``stable_operation`` on a span the instrumentation's own
    ``_before_cur_exec`` started (its commenter on, or a release whose
    helpers ``_statement_span`` lacks); an operation not known keeps the
    instrumentation's value (an attribute cannot be removed)."""
    try:
        given = getattr(span, "attributes", None) if span is not None else None
        if not given or DB_OPERATION_NAME not in given or not span.is_recording():
            return
        names = {DB_OPERATION_NAME: given[DB_OPERATION_NAME]}
        stable_operation(names, context)
        for key, value in names.items():
            span.set_attribute(key, value)
    except Exception:
        _log_operation_failure()


def _enabled_check() -> Callable[[], bool]:
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


_log_begin_failure = patching.FailureLog(LOG, "noting a BEGIN on its statement failed")
_log_operation_failure = patching.FailureLog(
    LOG, "naming an SQL span's operation and table failed")


#: The pool events the instrumentation counts connections on
#: (``db.client.connections.usage``), each a listener on every checkout.
POOL_EVENTS = frozenset(("connect", "close", "checkin", "checkout"))


def _only_measured_pool_events(original: Callable[..., None]) -> Callable[..., None]:
    from opentelemetry.metrics import NoOpUpDownCounter

    def __init__(self: Any, tracer: Any, engine: Any, connections_usage: Any,
                 *args: Any, **kwargs: Any) -> None:
        if isinstance(connections_usage, NoOpUpDownCounter):
            register = type(self)._register_event_listener

            def register_measured(target: Any, identifier: str, *rest: Any,
                                  **kw: Any) -> None:
                if identifier not in POOL_EVENTS:
                    register(target, identifier, *rest, **kw)

            self._register_event_listener = register_measured
        try:
            original(self, tracer, engine, connections_usage, *args, **kwargs)
        finally:
            self.__dict__.pop("_register_event_listener", None)

    return __init__


def skip_unmeasured_pool_events(patches: patching.Patches) -> bool:
    """Make the SQLAlchemy instrumentation register no pool listeners when
    its connection counter is the no-op one (set-up hands it a
    ``NoOpMeterProvider`` when the process has no MeterProvider): they
    would count, at every checkout, into nothing (about 40 k instructions
    a checkout). With a MeterProvider they stay. Its hooks are private
    (``EngineTracer.__init__``'s arguments, ``_register_event_listener``);
    on a release without them the listeners stay, with one line."""
    import inspect

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
    patches.patch(tracer_class, "__init__", _only_measured_pool_events)
    return True


def name_spans_by_table(patches: patching.Patches) -> bool:
    """Make the SQLAlchemy instrumentation name spans by ``span_name``, and
    fold a ``BEGIN`` into the statement span that follows it.

    Its hooks are private (``EngineTracer._operation_name`` and
    ``_before_cur_exec``, the latter bound when an engine is made); on a
    release without them the instrumentation's own names (or BEGIN spans)
    stay, with one line.
    """
    from opentelemetry.instrumentation.sqlalchemy import engine

    tracer_class = getattr(engine, "EngineTracer", None)
    if callable(getattr(tracer_class, "_before_cur_exec", None)):
        patches.patch(tracer_class, "_before_cur_exec", _folding_begin)
    else:
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._before_cur_exec; SQLite's BEGIN keeps its span")
    if not callable(getattr(tracer_class, "_operation_name", None)):
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._operation_name; SQL spans keep its own names")
        return False
    patches.patch(tracer_class, "_operation_name", _by_table)
    return True
