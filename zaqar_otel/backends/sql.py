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

The instrumentation offers no public hook for any of this: every private
of it that is used (its span-naming method, its statement listener, its
attribute helpers, the listener registration) is read in
``zaqar_otel._sdk.sqlalchemy_hooks``, checked, with the instrumentation's
own code where it differs; this module says what the names and the
attributes are. (There, on a tested release, the statement spans also take
fewer steps than the instrumentation's: the same span.)

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
from zaqar_otel._sdk import sqlalchemy_hooks

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


def _naming() -> Callable[[str, Any], str]:
    """``name(vendor, statement)``: ``span_name``, kept per statement text."""
    names: dict[tuple[str, str], str] = {}

    def name(vendor: str, statement: Any) -> str:
        if type(statement) is str:
            found = names.get((statement, vendor))
            if found is not None:
                return found
        named = span_name(statement, vendor)
        if type(statement) is str:
            if len(names) >= _NAMES_MAX:
                names.clear()
            names[(statement, vendor)] = named
        return named

    return name


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


def _statement_hooks() -> sqlalchemy_hooks.StatementHooks:
    """A BEGIN noted (no span; instrumentation suppressed: nothing) and
    shown on the next statement's span on its connection; the stable
    operation and table on every statement span."""
    enabled = sqlalchemy_hooks.instrumentation_enabled()

    def skip(conn: Any, statement: Any) -> bool:
        if statement != BEGIN:
            return False
        if enabled():
            _pending_begin.set((id(conn), time_ns()))
        return True

    def started(span: Any, conn: Any) -> None:
        pending = _pending_begin.get()
        if pending is None:
            return
        _pending_begin.set(None)
        try:
            if pending[0] == id(conn) and span is not None and span.is_recording():
                span.add_event(BEGIN, timestamp=pending[1])
        except Exception:
            _log_begin_failure()

    return sqlalchemy_hooks.StatementHooks(
        skip=skip, attributes=stable_operation, on_span=_stable_operation_on_span,
        started=started)


def _stable_operation_on_span(span: Any, context: Any) -> None:
    """``stable_operation`` on a span the instrumentation's own statement
    listener started (its commenter on, or a release the faster start is
    not used on); an operation not known keeps the instrumentation's value
    (an attribute cannot be removed)."""
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


_log_begin_failure = patching.FailureLog(LOG, "noting a BEGIN on its statement failed")
_log_operation_failure = patching.FailureLog(
    LOG, "naming an SQL span's operation and table failed")


#: The pool events the instrumentation counts connections on
#: (``db.client.connections.usage``), each a listener on every checkout.
POOL_EVENTS = frozenset(("connect", "close", "checkin", "checkout"))


def skip_unmeasured_pool_events(patches: patching.Patches) -> bool:
    """Make the SQLAlchemy instrumentation register no pool listeners when
    its connection counter is the no-op one (set-up hands it a
    ``NoOpMeterProvider`` when the process has no MeterProvider): they
    would count, at every checkout, into nothing (about 40 k instructions
    a checkout). With a MeterProvider they stay; on a release whose hooks
    differ (``_sdk.sqlalchemy_hooks``) too, with one line."""
    return sqlalchemy_hooks.skip_unmeasured_listeners(patches, POOL_EVENTS)


def name_spans_by_table(patches: patching.Patches) -> bool:
    """Make the SQLAlchemy instrumentation name spans by ``span_name``, and
    fold a ``BEGIN`` into the statement span that follows it; on a release
    without the hooks this needs (``_sdk.sqlalchemy_hooks``) the
    instrumentation's own names (or BEGIN spans) stay, with one line.
    """
    sqlalchemy_hooks.hook_statements(patches, _statement_hooks())
    return sqlalchemy_hooks.name_spans(patches, _naming())
