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


def test_sqlite_begin_is_an_event_of_the_statement_that_follows(tmp_path) -> None:
    """oslo.db's SQLite engine, as Zaqar's management store makes it: the
    BEGIN before each transaction's first statement makes no span of its
    own, but an event on that statement's span, at the time it was issued;
    a statement outside a traced parent makes nothing."""
    import sqlalchemy as sa
    from opentelemetry import trace
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.instrumentation.utils import unwrap
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from oslo_db.sqlalchemy import engines

    from zaqar_otel import patching
    from zaqar_otel.backends import sql

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from zaqar_otel.backends import instrumentors

    # As backends.instrumentors does: its range check skipped on SQLAlchemy 2.1.
    SQLAlchemyInstrumentor().instrument(
        tracer_provider=provider, enable_commenter=False,
        skip_dep_check=instrumentors._skip_sqlalchemy_check(SQLAlchemyInstrumentor()))
    unwrap(sa.engine.Engine, "connect")  # as backends.instrumentors does
    try:
        sql.name_spans_by_table()
        engine = engines.create_engine(f"sqlite:///{tmp_path}/x.sqlite",
                                       sqlite_fk=True)
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE q (name TEXT)"))
            conn.commit()
        exporter.clear()
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("trace point"):
            with engine.connect() as conn:
                conn.execute(sa.text("INSERT INTO q (name) VALUES ('a')"))
                conn.commit()
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT name FROM q")).fetchall()
        spans = {s.name: s for s in exporter.get_finished_spans()}
    finally:
        SQLAlchemyInstrumentor().uninstrument()
        patching.unpatch_all()
    assert set(spans) == {"trace point", "INSERT q", "SELECT q"}
    for name in ("INSERT q", "SELECT q"):
        span = spans[name]
        (event,) = span.events
        assert event.name == "BEGIN"
        assert span.start_time is not None
        assert spans["trace point"].start_time <= event.timestamp <= span.start_time
        assert span.parent is not None
        assert span.parent.span_id == spans["trace point"].context.span_id
    assert sql._pending_begin.get() is None
    assert trace.get_current_span() is trace.INVALID_SPAN
