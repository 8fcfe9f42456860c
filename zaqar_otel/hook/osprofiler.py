"""Zaqar's OSProfiler trace points as OTel spans, set up and undone.

``start`` makes osprofiler's ``trace_cls`` hide call args and results
(invariant 4), turns osprofiler's SQLAlchemy trace points off (the
sqlalchemy instrumentor's spans replace them), sets a
``tracepoints.Notifier`` as osprofiler's notifier, feeding a non-OTLP
``connection_string``'s own driver alongside, and, when no such driver needs
the payloads, has Zaqar's ``trace_cls`` methods make their spans directly
(``tracepoints.TracePoints``)::

    start(running, conf)       # running.undo puts everything back
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from zaqar_otel import patching, switches, tracepoints
from zaqar_otel.hook.state import Running


def start(running: Running, conf: cfg.ConfigOpts) -> None:
    """Trace points on, with ``running``'s tracer; their undo in ``running.undo``."""
    from osprofiler import notifier, profiler
    from osprofiler import sqlalchemy as osprofiler_sqlalchemy

    # Its statement/params trace points would duplicate the sqlalchemy
    # instrumentor's spans and carry bound values.
    osprofiler_sqlalchemy.disable()
    running.undo.append(osprofiler_sqlalchemy.enable)
    patches = patching.Patches()
    running.undo.append(patches.undo)
    patches.patch(profiler, "trace_cls", _trace_cls_without_args)
    forward = _osprofiler_driver(running.settings.connection_string, conf)
    skip = () if running.settings.on(switches.POOLING) else ("pooling_",)
    assert running.tracer is not None  # made by set-up first
    previous_notifier = notifier.get()
    running.undo.append(lambda: notifier.set(previous_notifier))
    notifier.set(tracepoints.Notifier(running.tracer, forward=forward,
                                      skip_prefixes=skip))
    if forward is None:
        # No other driver needs osprofiler's payloads: Zaqar's trace_cls
        # methods make their spans directly (the notifier still takes any
        # trace point that comes through osprofiler's own start/stop).
        points = tracepoints.TracePoints(running.tracer, skip_prefixes=skip)
        patches.patch(profiler, "trace", tracepoints.direct_trace(points))
        running.undo.append(points.close)


def _trace_cls_without_args(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def trace_cls(name: str, *args: Any, **kwargs: Any) -> Any:
        # Call args are never exported (invariant 4); hiding them here also
        # spares osprofiler rendering them for every call.
        kwargs["hide_args"] = True
        kwargs["hide_result"] = True
        return original(name, *args, **kwargs)

    return trace_cls


def _osprofiler_driver(
    connection_string: str, conf: cfg.ConfigOpts
) -> Callable[[dict[str, Any]], None] | None:
    """osprofiler's own driver for a non-OTLP connection_string, else None."""
    scheme = connection_string.partition("://")[0]
    # messaging:// is the stock default, unusable without oslo.messaging
    # context; otlp:// is osprofiler's OTLP driver, which we replace.
    if scheme in ("", "messaging", "otlp"):
        return None
    from osprofiler import notifier

    return notifier.create(connection_string, context=None, project="Zaqar",
                           service="Zaqar-server", host=socket.gethostname(),
                           conf=conf)
