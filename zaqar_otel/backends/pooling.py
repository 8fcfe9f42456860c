"""Spans for Zaqar's pool catalog: which pool served a queue, and where it is.

With ``pooling = True`` every queue operation first asks the catalog which
pool holds the queue. ``instrument_catalog`` wraps
``zaqar.storage.pooling.Catalog.lookup`` in a span ``zaqar.pool.lookup``
carrying the pool's name and its URI without credentials, so a slow request
can be pinned to the pool that served it::

    instrument_catalog(tracer, patches)     # [profiler] trace_pooling = true
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from zaqar_otel import patching, redact
from zaqar_otel._sdk import layout
from zaqar_otel.redact import redact_uri

SPAN_NAME = "zaqar.pool.lookup"
DEFAULT_POOL = "(default)"

def instrument_catalog(tracer: trace.Tracer, patches: patching.Patches) -> None:
    """Wrap ``Catalog.lookup`` and ``Catalog._init_driver`` (idempotent)."""
    from zaqar.storage import pooling

    # Another layout: an empty dict, nothing suppressed, every lookup a span.
    slot = layout.suppression_slot()
    get: Callable[[], Any] = slot[0].get if slot else dict
    first, second = slot[1] if slot else ("", "")

    def traced(lookup: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(lookup)
        def traced_lookup(self: Any, queue: str, project: str | None = None) -> Any:
            current = get()
            if current.get(first) or current.get(second):
                # An untraced request (sampling.untraced): no span to start.
                return lookup(self, queue, project)
            with tracer.start_as_current_span(
                    SPAN_NAME, kind=SpanKind.INTERNAL, record_exception=False,
                    set_status_on_exception=False) as span:
                try:
                    driver = lookup(self, queue, project)
                except Exception as exc:
                    redact.record_error(span, exc)
                    raise
                if span.is_recording():
                    name, uri = getattr(self, "_zaqar_otel_pools", {}).get(
                        id(driver), (None, None))
                    span.set_attribute("zaqar.pool.name", name or DEFAULT_POOL)
                    if uri:
                        span.set_attribute("zaqar.pool.uri", uri)
                return driver

        return traced_lookup

    def remembering(init_driver: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(init_driver)
        def remembering_init_driver(
            self: Any, pool_id: str | None, pool_conf: Any = None
        ) -> Any:
            driver = init_driver(self, pool_id, pool_conf)
            pools = self.__dict__.setdefault("_zaqar_otel_pools", {})
            pools[id(driver)] = (pool_id, _pool_uri(self, pool_id, pool_conf))
            return driver

        return remembering_init_driver

    patches.patch(pooling.Catalog, "lookup", traced)
    patches.patch(pooling.Catalog, "_init_driver", remembering)


def _pool_uri(catalog: Any, pool_id: str | None, pool_conf: Any) -> str | None:
    # Once per pool, when Zaqar connects to it; lookups then cost nothing.
    try:
        pool = (pool_conf if pool_id is None
                else catalog._pools_ctrl.get(pool_id, detailed=True))
        return redact_uri(pool["uri"])
    except Exception:
        return None
