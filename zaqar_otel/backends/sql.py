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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
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


def name_spans_by_table() -> bool:
    """Make the SQLAlchemy instrumentation name spans by ``span_name``.

    Its naming hook is private (``EngineTracer._operation_name``); on a
    release without it the instrumentation's own names stay, with one line.
    """
    from opentelemetry.instrumentation.sqlalchemy import engine

    tracer_class = getattr(engine, "EngineTracer", None)
    if not callable(getattr(tracer_class, "_operation_name", None)):
        LOG.info("zaqar-otel: this SQLAlchemy instrumentation has no "
                 "EngineTracer._operation_name; SQL spans keep its own names")
        return False
    patching.patch(tracer_class, "_operation_name", _by_table)
    return True
