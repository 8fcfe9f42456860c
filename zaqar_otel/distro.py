"""zaqar-otel for ``opentelemetry-instrument``.

The standard runner gives the same traces as ``zaqar-otel-server``::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 \\
        opentelemetry-instrument zaqar-server --config-file /etc/zaqar/zaqar.conf

* ``ZaqarOtelDistro`` (entry point ``opentelemetry_distro``): defaults the
  propagators to ``tracecontext,osprofiler`` and the attribute value length
  limit to zaqar-otel's (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, also for a
  provider another configurator builds), and leaves the redis, pymongo,
  sqlalchemy and requests instrumentors to the ``[profiler] trace_*``
  options instead of switching them all on.
* ``ZaqarOtelConfigurator`` (``opentelemetry_configurator``): builds nothing
  at start; the SDK is built when Zaqar has parsed zaqar.conf, so its options
  win over ``OTEL_*`` exactly as with ``zaqar-otel-server``.
* ``ZaqarInstrumentor`` (``opentelemetry_instrumentor``, name ``zaqar``):
  applies the start-up hook (``zaqar_otel.instrument.install``).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from opentelemetry.environment_variables import OTEL_PROPAGATORS
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.environment_variables import (
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS,
)
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.sdk.environment_variables import OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT

from zaqar_otel import instrument, settings, switches
from zaqar_otel.propagation import env_guard

#: Instrumentors zaqar-otel installs itself, each behind its trace_* option.
MANAGED_INSTRUMENTORS = switches.MANAGED_INSTRUMENTORS

#: The Zaqar releases the hook is tested with (20.1.3, 21.0.3, 22.0.3, 23.0.1).
ZAQAR_RELEASES = "zaqar >= 20.1, < 24"


class ZaqarOtelDistro(BaseDistro):
    """Defaults for Zaqar, and no instrumentor the options do not ask for."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_PROPAGATORS, env_guard.DEFAULT)
        # zaqar-otel's default length limit, also for a provider another
        # configurator builds (ours reads the variable the same way).
        os.environ.setdefault(OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
                              str(settings.DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT))
        # The instrumentors behind [profiler] trace_* are skipped before
        # opentelemetry-instrument checks their declared dependencies:
        # load_instrumentor below would skip them anyway, and the check logs
        # that the sqlalchemy one "only instruments sqlalchemy<2.1.0 ... so
        # nothing can be instrumented" on SQLAlchemy 2.1, which zaqar-otel
        # does trace.
        disabled = [name.strip() for name in
                    os.environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")
                    if name.strip()]
        os.environ[OTEL_PYTHON_DISABLED_INSTRUMENTATIONS] = ",".join(
            disabled + sorted(MANAGED_INSTRUMENTORS - set(disabled)))

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name in MANAGED_INSTRUMENTORS:
            return  # instrument.setup installs it if [profiler] trace_* says so
        super().load_instrumentor(entry_point, **kwargs)


class ZaqarOtelConfigurator:
    """Defers the SDK to ``instrument.setup(conf)`` at Zaqar's start-up.

    ``opentelemetry-instrument`` calls ``configure(**kwargs)`` on the
    configurator its entry point names; this one has nothing to configure
    then, so it needs nothing of the SDK's private ``_BaseConfigurator``."""

    def configure(self, **kwargs: Any) -> None:
        pass


class ZaqarInstrumentor(BaseInstrumentor):
    """Applies zaqar-otel's hook to Zaqar (``zaqar-server``, WSGI app)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        # The releases tested (`make breadth`); the `instruments` extra of
        # pyproject.toml says the same, and opentelemetry-instrument checks both.
        return (ZAQAR_RELEASES,)

    def _instrument(self, **kwargs: Any) -> None:
        instrument.install()

    def _uninstrument(self, **kwargs: Any) -> None:
        instrument.teardown()
