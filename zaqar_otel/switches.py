"""The trace switches, each defined once: one table read by the options,
the settings, the instrumentor set-up, ``zaqar-otel check`` and the
``opentelemetry-instrument`` distro.

Each ``[profiler]`` switch is one ``Switch``, a name of this module: which
option turns a part of tracing on, who defines the option (Zaqar and
osprofiler define theirs, zaqar-otel adds the rest with the help text
here), what ``zaqar-otel check`` says it traces, and the
``opentelemetry_instrumentor`` entry point it governs, if any (the distro
leaves that instrumentor to the switch). The code names the switch itself,
never a string: ``Settings.on(switches.REDIS)`` says whether it is on, and
``backends.instrumentors.STEPS[switches.REDIS]`` is its install step. Pure
data: the standard library only::

    from zaqar_otel import switches
    [s.option for s in switches.SWITCHES if s.owner == switches.OURS]
"""

from __future__ import annotations

from dataclasses import dataclass

OURS = "zaqar-otel"
ZAQAR = "zaqar"
OSPROFILER = "osprofiler"


@dataclass(frozen=True)
class Switch:
    option: str
    traces: str
    owner: str = OURS
    instrumentor: str | None = None
    help: str = ""


WSGI = Switch("trace_wsgi_transport", "API requests: the server span", owner=ZAQAR)
MESSAGE_STORE = Switch("trace_message_store", "message store controllers",
                       owner=ZAQAR)
MANAGEMENT_STORE = Switch("trace_management_store", "management store controllers",
                          owner=ZAQAR)
REDIS = Switch("trace_redis", "Redis commands", instrumentor="redis",
               help="Trace every Redis command Zaqar sends (redis-py "
               "instrumentation), nested under the storage controller call that "
               "issued it. Commands are exported as 'COMMAND ? ?': arguments, and "
               "so message bodies, never.")
MONGODB = Switch("trace_mongodb", "MongoDB commands", instrumentor="pymongo",
                 help="Trace every MongoDB command Zaqar sends (pymongo "
                 "instrumentation), nested under the storage controller call that "
                 "issued it. Only the command name and collection are exported, "
                 "never the statement.")
SQLALCHEMY = Switch("trace_sqlalchemy", "SQL statements", owner=OSPROFILER,
                    instrumentor="sqlalchemy")
REQUESTS = Switch("trace_requests", "outgoing HTTP (webhooks, Keystone)",
                  owner=OSPROFILER, instrumentor="requests")
POOLING = Switch("trace_pooling", "pool catalog lookups",
                 help="With pooling = True, add a span for each pool catalog "
                 "lookup, naming the pool chosen and its URI without credentials.")
MESSAGE_LINKS = Switch(
    "trace_message_links", "producer -> consumer links (writes to the message store)",
    help="Keep the span context of each traced post beside its "
    "messages in the message store (Redis key or MongoDB document, "
    "expiring with the message; trace and span id only), so a later "
    "traced list, get, claim or pop links its receive span to the "
    "posting span. Costs one small write per message of a traced post; "
    "nothing for untraced ones.")
WEBSOCKET = Switch("trace_websocket_transport", "websocket API requests",
                   help="Trace requests over the websocket API (transport = websocket) "
                   "like WSGI ones: a server span per API request, with the trace "
                   "context taken from the request's headers section (OSProfiler or "
                   "traceparent, under the same trust rules). Zaqar's own OSProfiler "
                   "support does not cover websocket.")

#: In the order ``zaqar-otel check`` reports them and set-up installs them.
SWITCHES: tuple[Switch, ...] = (WSGI, MESSAGE_STORE, MANAGEMENT_STORE, REDIS, MONGODB,
                                SQLALCHEMY, REQUESTS, POOLING, MESSAGE_LINKS, WEBSOCKET)

#: ``opentelemetry_instrumentor`` entry points a switch governs.
MANAGED_INSTRUMENTORS = frozenset(s.instrumentor for s in SWITCHES if s.instrumentor)
