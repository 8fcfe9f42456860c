"""The global propagator set-up installs, from ``OTEL_PROPAGATORS``.

Built from the ``opentelemetry_propagator`` entry points as
``opentelemetry.propagate`` builds its own at import, so an operator's
``OTEL_PROPAGATORS`` still wins over zaqar-otel's default
(``tracecontext,osprofiler``). ``opentelemetry.propagate``'s own loader
cannot serve: it is private, reads only the environment, defaults to
``tracecontext,baggage``, and builds every propagator without arguments,
where the OSProfiler propagator gets the configured ``[profiler]
hmac_keys`` handed down::

    propagate.set_global_textmap(textmap("tracecontext,osprofiler", keys))
"""

from __future__ import annotations

from importlib.metadata import entry_points

from opentelemetry.propagators.composite import CompositePropagator

from zaqar_otel.propagation import env_guard, propagator


def textmap(names: str, hmac_keys: tuple[str, ...]) -> CompositePropagator:
    """The propagators ``names`` (comma-separated) lists, in order; an
    unknown name is left out (``env_guard`` dropped and reported it)."""
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if name in ("", "none"):
            continue
        found = entry_points(group=env_guard.GROUP, name=name)
        if not found:  # unknown names: dropped and reported at import
            continue
        factory = next(iter(found)).load()
        if isinstance(factory, type) and issubclass(
                factory, propagator.OSProfilerPropagator):
            chosen.append(factory(hmac_keys))
        else:
            chosen.append(factory())
    return CompositePropagator(chosen)
