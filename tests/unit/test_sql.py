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


def test_stable_operation_and_table_from_the_statement_object() -> None:
    """``db.operation.name`` and ``db.collection.name`` (the stable database
    conventions) come from the SQLAlchemy object a statement was compiled
    from, as Zaqar's SQL store builds them; a join, a subquery or a text
    statement names no table, a text statement no operation."""
    import sqlalchemy as sa
    from zaqar.storage.sqlalchemy import tables

    from zaqar_otel.backends.sql import construct_names

    engine = sa.create_engine("sqlite://")
    tables.metadata.create_all(engine)
    seen: list[tuple[str, tuple[str | None, str | None]]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        seen.append((statement.split()[0], construct_names(context)))

    queues = tables.Queues
    subquery = sa.select(queues.c.id).subquery()
    with engine.begin() as conn:
        for statement in (
                queues.insert().values(project="p", name="q", metadata=b"{}"),
                sa.select(queues.c.metadata).where(queues.c.name == "q"),
                sa.select(sa.func.count("*")).where(queues.c.project == "p"),
                queues.update().where(queues.c.name == "q").values(metadata=b""),
                sa.select(queues.c.name, tables.Pools.c.name).join_from(
                    queues, tables.Pools, queues.c.name == tables.Pools.c.name),
                sa.select(subquery.c.id),
                queues.delete().where(queues.c.name == "q"),
                sa.text("SELECT 1")):
            conn.execute(statement)
    assert seen == [("INSERT", ("INSERT", "Queues")),
                    ("SELECT", ("SELECT", "Queues")),
                    ("SELECT", ("SELECT", "Queues")),
                    ("UPDATE", ("UPDATE", "Queues")),
                    ("SELECT", ("SELECT", None)),
                    ("SELECT", ("SELECT", None)),
                    ("DELETE", ("DELETE", "Queues")),
                    ("SELECT", (None, None))]
    schema = sa.Table("t", sa.MetaData(), sa.Column("a", sa.Integer), schema="s")
    compiled = sa.select(schema.c.a).compile()
    assert construct_names(type("Context", (), {"compiled": compiled})()) == (
        "SELECT", "s.t")


def test_a_span_the_instrumentation_started_gets_the_stable_names() -> None:
    """Where the instrumentation's own ``_before_cur_exec`` made the span (its
    commenter on), its ``db.operation.name`` (the span's name) is corrected
    on the span; a span without the stable names is left as it is."""
    from opentelemetry.sdk.trace import TracerProvider
    from zaqar.storage.sqlalchemy import tables

    from zaqar_otel.backends.sql import _stable_operation_on_span

    context = type("Context", (), {
        "compiled": tables.Queues.insert().values(name="q").compile()})()
    tracer = TracerProvider().get_tracer("test")
    stable = tracer.start_span("INSERT Queues", attributes={
        "db.operation.name": "INSERT Queues", "db.query.text": "INSERT ..."})
    old = tracer.start_span("INSERT Queues", attributes={
        "db.operation": "INSERT Queues"})
    for span in (stable, old):
        _stable_operation_on_span(span, context)
        span.end()
    assert dict(stable.attributes) == {  # type: ignore[attr-defined]
        "db.operation.name": "INSERT", "db.collection.name": "Queues",
        "db.query.text": "INSERT ..."}
    assert dict(old.attributes) == {  # type: ignore[attr-defined]
        "db.operation": "INSERT Queues"}


@pytest.mark.parametrize("tested", [True, False],
                         ids=["tested release", "untested release"])
def test_sqlite_begin_is_an_event_of_the_statement_that_follows(
        tmp_path, monkeypatch: pytest.MonkeyPatch, tested: bool) -> None:
    """oslo.db's SQLite engine, as Zaqar's management store makes it: the
    BEGIN before each transaction's first statement makes no span of its
    own, but an event on that statement's span, at the time it was issued;
    a statement outside a traced parent makes nothing. The same spans on an
    instrumentation release the faster statement start was not tested on
    (the instrumentation's own listener starts them)."""
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
    from zaqar_otel._sdk import sqlalchemy_hooks
    from zaqar_otel.backends import sql

    monkeypatch.setattr(sqlalchemy_hooks, "tested_release", lambda: tested)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from zaqar_otel.backends import instrumentors

    # As backends.instrumentors does: its range check skipped on SQLAlchemy 2.1.
    SQLAlchemyInstrumentor().instrument(
        tracer_provider=provider, enable_commenter=False,
        skip_dep_check=instrumentors._skip_sqlalchemy_check(SQLAlchemyInstrumentor()))
    unwrap(sa.engine.Engine, "connect")  # as backends.instrumentors does
    patches = patching.Patches()
    try:
        sql.name_spans_by_table(patches)
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
        patches.undo()
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


def test_the_faster_statement_start_runs_only_on_a_tested_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``statement_start`` (the instrumentation's listener in fewer steps)
    only on an instrumentation release of ``TESTED``; on another, None: the
    instrumentation's own listener starts the spans."""
    from opentelemetry.instrumentation.sqlalchemy import engine

    from zaqar_otel._sdk import layout, sqlalchemy_hooks

    assert layout.release("0.66b1") == (0, 66)
    assert layout.release("1.0.0") == (1, 0)
    for tested in (True, False):
        monkeypatch.setattr(sqlalchemy_hooks, "tested_release", lambda t=tested: t)
        start = sqlalchemy_hooks.statement_start(engine, lambda attrs, context: None)
        assert (start is not None) is tested


def _tracer_listeners(engine: object) -> dict[str, int]:
    """How many listeners of the instrumentation's EngineTracer each event of
    ``engine`` (and its pool) has."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    counts = {}
    for name in ("before_cursor_execute", "connect", "close", "checkin", "checkout"):
        owner = engine if name == "before_cursor_execute" else engine.pool  # type: ignore[attr-defined]
        counts[name] = sum(isinstance(getattr(fn, "__self__", None), EngineTracer)
                           for fn in getattr(owner.dispatch, name))
    return counts


def test_without_a_meter_provider_no_pool_listener_counts_into_nothing(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """The SQLAlchemy step as set-up runs it, in a process that set no
    MeterProvider: statements are traced, no listener runs at each checkout,
    and undoing the step leaves the engine as it was."""
    import sqlalchemy as sa
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from oslo_db.sqlalchemy import engines

    from zaqar_otel._sdk import layout
    from zaqar_otel.backends import instrumentors

    assert not layout.global_meter_provider_set()  # the test process sets none
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    undo = instrumentors._trace_sqlalchemy(
        instrumentors.Tracing(provider, tracer, None))  # type: ignore[arg-type]
    try:
        engine = engines.create_engine(f"sqlite:///{tmp_path}/x.sqlite")
        assert _tracer_listeners(engine) == {
            "before_cursor_execute": 1, "connect": 0, "close": 0, "checkin": 0,
            "checkout": 0}
        with tracer.start_as_current_span("trace point"):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1")).fetchall()
        assert {s.name for s in exporter.get_finished_spans()} == {
            "trace point", "SELECT"}
    finally:
        undo()  # the step's own patches too
    assert _tracer_listeners(engine) == dict.fromkeys(_tracer_listeners(engine), 0)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_with_a_meter_provider_connections_are_still_counted(tmp_path) -> None:
    """In a process with a MeterProvider (opentelemetry-instrument's, say),
    the instrumentation's pool listeners stay and count connections."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sqlalchemy as sa
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from oslo_db.sqlalchemy import engines
        from zaqar_otel.backends import instrumentors

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        provider = TracerProvider()
        instrumentors._trace_sqlalchemy(instrumentors.Tracing(
            provider, provider.get_tracer("t"), None))
        engine = engines.create_engine("sqlite:///{tmp_path}/y.sqlite")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).fetchall()
        names = {{m.name for rm in reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics}}
        print(sorted(names))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "db.client.connections.usage" in done.stdout, done.stdout
