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
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from time import time_ns
from typing import Any

from zaqar_otel import patching

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


def _by_table(original: Callable[..., str]) -> Callable[..., str]:
    def _operation_name(self: Any, db_name: Any, statement: Any) -> str:
        try:
            return span_name(statement, str(getattr(self, "vendor", "") or "sql"))
        except Exception:
            return original(self, db_name, statement)

    return _operation_name


BEGIN = "BEGIN"  # what oslo.db executes on SQLite
# (id of the SQLAlchemy Connection, when) of a BEGIN not shown yet.
_pending_begin: contextvars.ContextVar[tuple[int, int] | None] = (
    contextvars.ContextVar("zaqar_otel_sql_begin", default=None))


def _folding_begin(original: Callable[..., Any]) -> Callable[..., Any]:
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    def _before_cur_exec(self: Any, conn: Any, cursor: Any, statement: Any,
                         params: Any, context: Any, executemany: bool) -> Any:
        if statement == BEGIN:
            if is_instrumentation_enabled():
                _pending_begin.set((id(conn), time_ns()))
            return statement, params
        result = original(self, conn, cursor, statement, params, context,
                          executemany)
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


_log_begin_failure = patching.FailureLog(LOG, "noting a BEGIN on its statement failed")


def name_spans_by_table() -> bool:
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
        patching.patch(tracer_class, "_before_cur_exec", _folding_begin)
    else:
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._before_cur_exec; SQLite's BEGIN keeps its span")
    if not callable(getattr(tracer_class, "_operation_name", None)):
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._operation_name; SQL spans keep its own names")
        return False
    patching.patch(tracer_class, "_operation_name", _by_table)
    return True
