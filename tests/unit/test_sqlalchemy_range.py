"""The sqlalchemy step on an SQLAlchemy outside the instrumentation's range.

The sqlalchemy instrumentation 0.66 declares ``sqlalchemy < 2.1``;
zaqar-otel skips that check for 2.1 (``SQLALCHEMY_BEYOND_INSTRUMENTATION``),
says so in one line, and needs greenlet there (the instrumentation imports
``sqlalchemy.ext.asyncio``). Which SQLAlchemy is installed here decides
nothing: the tests move the ranges around the installed version. A real
Zaqar on 2.1 is in tests/functional/test_zaqar_release.py.
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata
from types import SimpleNamespace

import pytest

from zaqar_otel.backends import instrumentors

INSTALLED = metadata.version("sqlalchemy")


class Declares:
    """An instrumentor declaring ``deps``, as SQLAlchemyInstrumentor does."""

    def __init__(self, *deps: str) -> None:
        self.deps = deps

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return self.deps


def test_inside_the_instrumentations_range_nothing_is_skipped(caplog) -> None:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    real = SQLAlchemyInstrumentor()
    if instrumentors._skip_sqlalchemy_check(Declares("sqlalchemy >= 1.0")):
        pytest.fail("skipped inside the range")
    assert not caplog.records
    # And the real instrumentor on this machine: skipped exactly on 2.1.
    with caplog.at_level(logging.INFO):
        skipped = instrumentors._skip_sqlalchemy_check(real)
    assert skipped == INSTALLED.startswith("2.1."), INSTALLED


def test_beyond_its_range_but_tested_the_check_is_skipped_with_one_line(
        monkeypatch, caplog) -> None:
    monkeypatch.setattr(instrumentors, "SQLALCHEMY_BEYOND_INSTRUMENTATION",
                        f"sqlalchemy == {INSTALLED}")
    with caplog.at_level(logging.INFO, logger=instrumentors.__name__):
        assert instrumentors._skip_sqlalchemy_check(Declares("sqlalchemy < 1.0"))
    (record,) = caplog.records
    message = record.getMessage()
    assert "sqlalchemy < 1.0" in message and f"sqlalchemy {INSTALLED}" in message
    assert "version check is skipped" in message


def test_beyond_what_zaqar_otel_tested_the_instrumentation_decides(
        monkeypatch, caplog) -> None:
    monkeypatch.setattr(instrumentors, "SQLALCHEMY_BEYOND_INSTRUMENTATION",
                        "sqlalchemy < 1.0")
    assert not instrumentors._skip_sqlalchemy_check(Declares("sqlalchemy < 1.0"))
    assert not caplog.records


def test_without_greenlet_the_step_is_off_with_one_warning_naming_it(
        monkeypatch, caplog) -> None:
    monkeypatch.setattr(instrumentors, "SQLALCHEMY_BEYOND_INSTRUMENTATION",
                        f"sqlalchemy == {INSTALLED}")
    monkeypatch.setitem(sys.modules, "greenlet", None)  # import raises
    with pytest.raises(ImportError) as raised:
        instrumentors._skip_sqlalchemy_check(Declares("sqlalchemy < 1.0"))
    assert raised.value.name == "greenlet"
    # install() turns that into the "not installed" line of the switch, and
    # nothing was instrumented half-way (the check runs before instrument()).
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    check = instrumentors._skip_sqlalchemy_check
    monkeypatch.setattr(instrumentors, "_skip_sqlalchemy_check",
                        lambda _: check(Declares("sqlalchemy < 1.0")))
    monkeypatch.setattr(instrumentors, "deliveries",
                        SimpleNamespace(instrument_notifier=lambda tracer: None))
    settings = SimpleNamespace(
        on=lambda switch: switch is instrumentors.switches.SQLALCHEMY)
    tracing = instrumentors.Tracing(provider=None, tracer=None, entry=None)
    with caplog.at_level(logging.WARNING, logger=instrumentors.__name__):
        assert instrumentors.install(settings, tracing) == []
    (record,) = caplog.records
    assert "trace_sqlalchemy" in record.getMessage()
    assert "greenlet" in record.getMessage()
    assert not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry
    # Nor patched: what the step patched before the check is put back.
    from opentelemetry.instrumentation.sqlalchemy import engine

    assert not hasattr(engine.EngineTracer.__init__, "__zaqar_otel_original__")
