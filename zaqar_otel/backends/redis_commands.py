"""Redis commands as events of the span that sent them.

With ``[profiler] trace_redis`` on and ``redis_command_spans = false`` (the
default), each command Zaqar sends through redis-py (``Redis.execute_command``,
a watching pipeline's ``immediate_execute_command``) and each pipeline
(``Pipeline.execute``) adds one event to the current span, the storage
controller call that sent it, in place of a CLIENT span of its own
(``redis_command_spans = true``: the redis-py instrumentation's spans).

An event carries what that span would: its name (the command; a pipeline's
commands, space-separated), the statement as ``COMMAND ? ?`` (never an
argument, so never a message body), the argument count or the pipeline's
length, the database index and the server's address, port and transport,
under the database and network conventions the instrumentations follow
(``layout.Conventions``). Its time is the command's start;
``db.client.operation.duration`` is its duration in seconds (the value the
stable database metric of that name records) and ``error.type`` the class of
the exception it raised, if any.

What a span per command has and an event does not: a bar of its own in a
trace view, a span id of its own, and a CLIENT span that service maps draw as
an edge to Redis. On a saturated server those spans cost about a tenth of
its throughput (docs/performance.md, the saturation run); an event costs a
fraction of a span. A command while no span records (an unsampled request)
costs one look-up of the current span::

    undo = redis_commands.instrument(conventions, patches)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from time import perf_counter_ns, time_ns
from typing import Any

from zaqar_otel import patching
from zaqar_otel._sdk import events as sdk_events
from zaqar_otel._sdk import layout

LOG = logging.getLogger(__name__)

#: The statement's longest text, cut as the redis-py instrumentation cuts it.
MAX_STATEMENT = 1000
#: Command shapes kept (name, argument count, pool): Zaqar sends a few dozen.
_SHAPES_MAX = 1024
DURATION = "db.client.operation.duration"
ERROR_TYPE = "error.type"


class _Names:
    """The attribute names of one set of conventions (old, stable or both)."""

    def __init__(self, conventions: layout.Conventions) -> None:
        db_old, db_new = conventions.database_old, conventions.database_new
        net_old, net_new = conventions.http_old, conventions.http_new
        self.statement = (("db.statement",) * db_old) + (("db.query.text",) * db_new)
        self.system = (("db.system",) * db_old) + (("db.system.name",) * db_new)
        # The stable conventions dropped the index with no replacement.
        self.index = ("db.redis.database_index",) * db_old
        self.address = (("net.peer.name",) * net_old) + (("server.address",) * net_new)
        self.port = (("net.peer.port",) * net_old) + (("server.port",) * net_new)
        self.tcp = (("net.transport", "ip_tcp"),) * net_old + (
            ("network.transport", "tcp"),) * net_new
        self.unix = (("net.transport", "other"),) * net_old + (
            ("network.transport", "unix"),) * net_new


@functools.lru_cache(maxsize=1024)
def statement(name: str, arguments: int) -> str:
    """``NAME ? ?`` for a command of ``arguments`` arguments after its name."""
    text = " ".join([name, *("?" * arguments)])
    return text if len(text) <= MAX_STATEMENT else text[:MAX_STATEMENT - 3] + "..."


class CommandEvents:
    """Adds a command's event to a span; one per set-up (its conventions)."""

    def __init__(self, conventions: layout.Conventions) -> None:
        self._names = _Names(conventions)
        self._log_failure = patching.FailureLog(
            LOG, "recording a Redis command as an event failed")
        # A connection pool's attributes: a pool's settings never change.
        self.server = functools.lru_cache(maxsize=64)(self._server)
        # A command's or pipeline's name and shared attributes, by its
        # commands' names and argument counts and its pool: a few dozen.
        self.shapes = functools.lru_cache(maxsize=1024)(self._shape)
        # A single command's, by (name, argument count, pool): one flat
        # look-up on every command (emptied when full, as rarely as that).
        self._commands: dict[tuple[Any, int, Any], tuple[str, sdk_events.Shared]] = {}

    def _server(self, pool: Any) -> tuple[tuple[str, Any], ...]:
        names = self._names
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        index = kwargs.get("db") or 0
        found: list[tuple[str, Any]] = [(n, "redis") for n in names.system]
        found += [(n, int(index)) for n in names.index]
        if "path" in kwargs:
            found += [(n, str(kwargs["path"])) for n in names.address]
            found += names.unix
        else:
            found += [(n, str(kwargs.get("host", "localhost"))) for n in names.address]
            found += [(n, int(kwargs.get("port", 6379))) for n in names.port]
            found += names.tcp
        return tuple(found)

    def _shape(self, commands: tuple[tuple[Any, int], ...], pipeline: bool,
               pool: Any) -> tuple[str, sdk_events.Shared]:
        """The event's name and the attributes every event of these commands
        (each its name and argument count, its name included) on ``pool``
        carries, kept once for all of them (``_sdk.events``)."""
        names = [str(command) for command, _ in commands]
        text = "\n".join(statement(name, max(0, length - 1))
                         for name, (_, length) in zip(names, commands, strict=True))
        count = (("db.redis.pipeline_length", len(commands)) if pipeline
                 else ("db.redis.args_length", commands[0][1]))
        return " ".join(names), sdk_events.Shared(
            (*((n, text) for n in self._names.statement), count, *self.server(pool)))

    def command(self, span: Any, client: Any, command: Any, count: int,
                start: int, began: int) -> None:
        """``add`` for one command that returned (the usual case), in fewer
        steps: ``command`` is its name and ``count`` its argument count,
        its name included."""
        try:
            duration = (perf_counter_ns() - began) / 1e9
            key = (command, count, client.connection_pool)
            shape = self._commands.get(key)
            if shape is None:
                if len(self._commands) >= _SHAPES_MAX:
                    self._commands.clear()
                shape = self._commands[key] = self.shapes(
                    ((command, count),), False, key[2])
            sdk_events.add(span, shape[0], start, shape[1], ((DURATION, duration),))
        except Exception:
            self._log_failure()

    def add(self, span: Any, client: Any, commands: tuple[tuple[Any, int], ...],
            pipeline: bool, start: int, began: int, error: BaseException | None,
            ) -> None:
        """The event of ``commands`` (a command's, or a pipeline's) sent by
        ``client`` that began at ``start`` (ns since the epoch; ``began`` by
        the performance clock)."""
        try:
            duration = (perf_counter_ns() - began) / 1e9
            name, shared = self.shapes(commands, pipeline, client.connection_pool)
            own: tuple[tuple[str, Any], ...] = (
                ((DURATION, duration),) if error is None else
                ((DURATION, duration), (ERROR_TYPE, type(error).__qualname__)))
            sdk_events.add(span, name, start, shared, own)
        except Exception:
            self._log_failure()


def _command(events: CommandEvents, current_span: Callable[[], Any],
             ) -> Callable[[Any], Any]:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def execute_command(self: Any, *args: Any, **options: Any) -> Any:
            span = current_span()
            if not args or not span.is_recording():
                return original(self, *args, **options)
            start, began = time_ns(), perf_counter_ns()
            try:
                result = original(self, *args, **options)
            except BaseException as error:
                events.add(span, self, ((args[0], len(args)),), False, start,
                           began, error)
                raise
            events.command(span, self, args[0], len(args), start, began)
            return result
        return execute_command
    return wrap


def _pipeline(events: CommandEvents, current_span: Callable[[], Any],
              ) -> Callable[[Any], Any]:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
            span = current_span()
            stack = getattr(self, "command_stack", None)
            if not stack or not span.is_recording():
                return original(self, *args, **kwargs)
            try:
                commands = tuple((args[0] if args else "", len(args))
                                 for args, _ in stack)
            except Exception:  # an unknown stack's layout: not recorded
                return original(self, *args, **kwargs)
            start, began = time_ns(), perf_counter_ns()
            try:
                result = original(self, *args, **kwargs)
            except BaseException as error:
                events.add(span, self, commands, True, start, began, error)
                raise
            events.add(span, self, commands, True, start, began, None)
            return result
        return execute
    return wrap


def instrument(conventions: layout.Conventions, patches: patching.Patches) -> None:
    """Redis commands and pipelines as events (see the module)."""
    import redis
    from redis import client

    events = CommandEvents(conventions)
    current_span = layout.current_span_reader()
    patches.patch(redis.Redis, "execute_command", _command(events, current_span))
    patches.patch(client.Pipeline, "immediate_execute_command",
                  _command(events, current_span))
    patches.patch(client.Pipeline, "execute", _pipeline(events, current_span))
