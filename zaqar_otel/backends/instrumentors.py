"""The install steps behind the ``[profiler] trace_*`` switches.

``STEPS`` maps a switch (``switches.REDIS``, the object, not its option's
name) to its step: what it instruments and patches, and the undo of it.
Set-up hands down what they trace with (``Tracing``); ``install`` runs the
step of every switch that is on, in the table's order (``switches``). A
step whose driver this deployment lacks (ImportError) turns off only that
part, with one warning naming the switch; ``uninstall`` undoes every step
that ran::

    done = instrumentors.install(settings, Tracing(provider, tracer, entry,
                                                   conventions))
    instrumentors.uninstall(done)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import unwrap

from zaqar_otel import patching, redact, switches
from zaqar_otel._sdk import layout
from zaqar_otel.backends import pooling, redis_commands, sql
from zaqar_otel.entry import lifecycle, websocket
from zaqar_otel.messaging import deliveries, links

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracing:
    """What set-up built and the instrumentors trace with."""

    provider: Any  # the SDK TracerProvider
    tracer: trace.Tracer
    entry: lifecycle.Entry
    #: The semantic-convention modes the instrumentations follow (set-up read
    #: them once): the names zaqar-otel's hooks set follow them too.
    conventions: layout.Conventions = layout.OLD_CONVENTIONS
    #: ``[profiler] redis_command_spans``: a span per Redis command (the
    #: redis-py instrumentation) or an event on the span that sent it.
    redis_command_spans: bool = False


def _redis() -> Any:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return RedisInstrumentor()


def _trace_redis(tracing: Tracing) -> Callable[[], None]:
    if not tracing.redis_command_spans:
        with _patching() as patches:
            redis_commands.instrument(tracing.conventions, patches)
        return patches.undo
    _redis().instrument(tracer_provider=tracing.provider)
    import redis
    from redis import client

    restore = skip_when_suppressed((redis.Redis, "execute_command"),
                                   (client.Pipeline, "execute"),
                                   (client.Pipeline, "immediate_execute_command"))

    def undo() -> None:
        restore()
        _redis().uninstrument()

    return undo


def skip_when_suppressed(*methods: tuple[type, str]) -> Callable[[], None]:
    """Have an untraced request call each of ``methods`` past its
    instrumentation: the instrumentation's wrapper (wrapt's, on the class)
    gets a plain method in front that calls the original directly while
    instrumentation is suppressed (``sampling.untraced``), what the wrapper
    itself would do after its own steps (about 4 k instructions a Redis
    command). Other requests go through the wrapper as before. A method
    that is not such a wrapper, or a context the API keeps otherwise
    (``layout.suppression_slot``), is left alone. Returns the undo."""
    slot = layout.suppression_slot()
    if slot is None:
        return _nothing_to_undo
    variable, keys = slot
    restored: list[tuple[type, str, Any]] = []
    for cls, name in methods:
        wrapper = cls.__dict__.get(name)
        original = getattr(wrapper, "__wrapped__", None)
        if original is None or not hasattr(wrapper, "__get__"):
            continue
        setattr(cls, name, _in_front(wrapper, original, variable.get, keys))
        restored.append((cls, name, wrapper))

    def undo() -> None:
        for cls, name, wrapper in reversed(restored):
            setattr(cls, name, wrapper)

    return undo


def _in_front(wrapper: Any, original: Callable[..., Any],
              get: Callable[[], Any], keys: tuple[str, str]) -> Callable[..., Any]:
    bind = wrapper.__get__
    first, second = keys

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        current = get()
        if current.get(first) or current.get(second):
            return original(self, *args, **kwargs)
        return bind(self, type(self))(*args, **kwargs)

    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(method, attribute, getattr(original, attribute))
    return method


def _trace_mongodb(tracing: Tracing) -> Callable[[], None]:
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    PymongoInstrumentor().instrument(tracer_provider=tracing.provider,
                                     capture_statement=False)
    return PymongoInstrumentor().uninstrument


#: SQLAlchemy releases traced beyond the range the sqlalchemy
#: instrumentation declares (0.66 says < 2.1): its code works on 2.1 (tested
#: by ``make breadth``), so its check is skipped there, and only there.
SQLALCHEMY_BEYOND_INSTRUMENTATION = "sqlalchemy >= 2.1, < 2.2"


def _skip_sqlalchemy_check(instrumentor: Any) -> bool:
    """Whether ``instrument`` must skip the instrumentation's version check.

    True for an SQLAlchemy outside the instrumentation's declared range but
    inside SQLALCHEMY_BEYOND_INSTRUMENTATION, with one line saying so. Any
    other version is left to the instrumentation (which refuses it, with its
    own error line). Raises ImportError when greenlet is missing: the
    instrumentation wraps create_async_engine, whose import needs greenlet
    on 2.1, and would raise half-applied.
    """
    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts

    declared = instrumentor.instrumentation_dependencies()
    conflict = get_dependency_conflicts(declared)
    if conflict is None or get_dependency_conflicts(
            [SQLALCHEMY_BEYOND_INSTRUMENTATION]) is not None:
        return False
    import greenlet  # noqa: F401  # the step's ImportError names it

    LOG.info("zaqar-otel: the sqlalchemy instrumentation declares %s, %s is "
             "installed: its version check is skipped (zaqar-otel traces %s)",
             ", ".join(declared), conflict.found, SQLALCHEMY_BEYOND_INSTRUMENTATION)
    return True


def _trace_sqlalchemy(tracing: Tracing) -> Callable[[], None]:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    measured: dict[str, Any] = {}
    with _patching() as patches:
        if not layout.global_meter_provider_set():
            # Nothing records its connection counters: a no-op provider, and
            # no pool listeners on every checkout. (A MeterProvider set
            # later, after Zaqar's engines are made, does not get them.)
            from opentelemetry.metrics import NoOpMeterProvider

            measured["meter_provider"] = NoOpMeterProvider()
            sql.skip_unmeasured_pool_events(patches)
        instrumentor.instrument(
            tracer_provider=tracing.provider, enable_commenter=False,
            skip_dep_check=_skip_sqlalchemy_check(instrumentor), **measured)
        sql.name_spans_by_table(patches)
    # The instrumentor also makes a "connect" span per Engine.connect().
    # Zaqar's SQL store calls it for every statement (NullPool on
    # SQLite), so half the SQL spans would say only "connect"; a slow
    # checkout still shows, as the gap before the statement span inside
    # its store trace point.
    from sqlalchemy.engine import Engine

    unwrap(Engine, "connect")

    def undo() -> None:
        patches.undo()
        SQLAlchemyInstrumentor().uninstrument()

    return undo


class _UserAgentByMode:
    """The TracerProvider the requests instrumentation gets in the old HTTP
    mode: its spans start with ``http.user_agent`` (the old name) where it
    puts ``user_agent.original`` in every mode (0.66b1), so a webhook call's
    span carries no stable name; both under ``http/dup``. Only its span
    starts pass here (a webhook call, a Keystone token check)."""

    def __init__(self, provider: Any, keep_new: bool) -> None:
        self._provider = provider
        self._keep_new = keep_new

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _UserAgentTracer(self._provider.get_tracer(*args, **kwargs),
                                self._keep_new)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


class _UserAgentTracer:
    """A tracer starting spans with ``_UserAgentByMode``'s attribute names."""

    def __init__(self, tracer: trace.Tracer, keep_new: bool) -> None:
        self._tracer = tracer
        self._keep_new = keep_new

    def _renamed(self, attributes: Any) -> Any:
        if not attributes or "user_agent.original" not in attributes:
            return attributes
        renamed = dict(attributes)
        renamed["http.user_agent"] = (renamed["user_agent.original"]
                                      if self._keep_new
                                      else renamed.pop("user_agent.original"))
        return renamed

    def start_span(self, name: str, context: Any = None,
                   kind: trace.SpanKind = trace.SpanKind.INTERNAL,
                   attributes: Any = None, **kwargs: Any) -> trace.Span:
        return self._tracer.start_span(name, context, kind,
                                       self._renamed(attributes), **kwargs)

    def start_as_current_span(self, name: str, context: Any = None,
                              kind: trace.SpanKind = trace.SpanKind.INTERNAL,
                              attributes: Any = None, **kwargs: Any) -> Any:
        return self._tracer.start_as_current_span(
            name, context, kind, self._renamed(attributes), **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracer, name)


def _trace_requests(tracing: Tracing) -> Callable[[], None]:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    # The URL attribute of the mode only (url.full, http.url or both): the
    # hook never adds the other mode's name to the span.
    names = tuple(name for name, followed in (
        ("url.full", tracing.conventions.http_new),
        ("http.url", tracing.conventions.http_old)) if followed)
    conventions = tracing.conventions
    provider = (_UserAgentByMode(tracing.provider, conventions.http_new)
                if conventions.http_old else tracing.provider)
    RequestsInstrumentor().instrument(tracer_provider=provider,
                                      request_hook=redact.requests_hook_for(names))
    import requests

    restore = skip_when_suppressed((requests.Session, "send"))

    def undo() -> None:
        restore()  # first: the instrumentation unwraps only its own function
        RequestsInstrumentor().uninstrument()

    return undo


def _nothing_to_undo() -> None:
    pass


@contextlib.contextmanager
def _patching() -> Iterator[patching.Patches]:
    """The patches of one step, put back at once if the step fails half-way
    (a driver missing: ImportError); else ``patches.undo`` is its undo."""
    patches = patching.Patches()
    try:
        yield patches
    except BaseException:
        patches.undo()
        raise


def _trace_wsgi(tracing: Tracing) -> Callable[[], None]:
    # The server span and the messaging middleware go in with Zaqar's WSGI
    # driver (set-up's hook); here the deliveries of what traced posts sent.
    with _patching() as patches:
        deliveries.instrument_notifier(tracing.tracer, patches)
    return patches.undo


def _trace_pooling(tracing: Tracing) -> Callable[[], None]:
    with _patching() as patches:
        pooling.instrument_catalog(tracing.tracer, patches)
    return patches.undo


def _trace_message_links(tracing: Tracing) -> Callable[[], None]:
    with _patching() as patches:
        links.instrument_stores(patches)
    return patches.undo


def _trace_websocket(tracing: Tracing) -> Callable[[], None]:
    with _patching() as patches:
        websocket.instrument_handler(tracing.entry, patches, tracing.conventions)
        # The deliveries of what traced posts sent, as for WSGI.
        deliveries.instrument_notifier(tracing.tracer, patches)
    return patches.undo


Step = Callable[[Tracing], Callable[[], None]]

#: The install step of each switch that has one; the stores' switches are
#: Zaqar's own (its storage driver loader applies them).
STEPS: dict[switches.Switch, Step] = {
    switches.WSGI: _trace_wsgi,
    switches.REDIS: _trace_redis,
    switches.MONGODB: _trace_mongodb,
    switches.SQLALCHEMY: _trace_sqlalchemy,
    switches.REQUESTS: _trace_requests,
    switches.POOLING: _trace_pooling,
    switches.MESSAGE_LINKS: _trace_message_links,
    switches.WEBSOCKET: _trace_websocket,
}


def install(settings: Any, tracing: Tracing) -> list[Callable[[], None]]:
    """Run the step of every switch on in ``settings`` (``settings.on``);
    their undo functions."""
    undo: list[Callable[[], None]] = []
    for switch in switches.SWITCHES:
        step = STEPS.get(switch)
        if step is None or not settings.on(switch):
            continue
        try:
            undo.append(step(tracing))
            continue
        except ImportError as exc:
            missing = exc.name or str(exc)
        # A driver this deployment does not have: only what needs it is off,
        # never the rest of tracing. (Logged outside the except: oslo.log
        # would repeat the exception.)
        LOG.warning("zaqar-otel: [profiler] %s is on, but %s is not installed: "
                    "that part is not traced; install it or set %s = false",
                    switch.option, missing, switch.option)
    return undo


def uninstall(undo: Sequence[Callable[[], None]]) -> None:
    """Undo what ``install`` did, last step first."""
    for step in reversed(undo):
        try:
            step()
        except Exception:  # an instrumentor that cannot undo: keep going
            LOG.debug("zaqar-otel: could not undo an instrumentor", exc_info=True)
