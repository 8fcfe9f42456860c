"""SQL span names: operation and table, never a file path or a value."""

from __future__ import annotations

import pytest

from zaqar_otel.backends.sql import span_name


@pytest.mark.parametrize(("statement", "name"), [
    ('SELECT "Queues".id, "Queues".name FROM "Queues" WHERE "Queues".project = ?',
     "SELECT Queues"),
    ('INSERT INTO "Queues" (project, name, metadata) VALUES (?, ?, ?)',
     "INSERT Queues"),
    ("UPDATE `Pools` SET weight=%(weight)s WHERE `Pools`.name = %(name_1)s",
     "UPDATE Pools"),
    ('DELETE FROM "Queues" WHERE "Queues".name = ?', "DELETE Queues"),
    ("/* a comment */ select count(*) from catalogue", "SELECT catalogue"),
    ("BEGIN", "BEGIN"),
    ("  commit  ", "COMMIT"),
    ("SELECT 1", "SELECT"),
    ("SELECT 'FROM secret' ", "SELECT"),  # a literal is not a table
    ("", "sqlite"),
    (None, "sqlite"),
])
def test_span_name(statement: object, name: str) -> None:
    assert span_name(statement, "sqlite") == name
