"""Redis commands as events (``[profiler] redis_command_spans = false``, the
default; ``zaqar_otel/backends/redis_commands.py``) in a real
``zaqar-otel-server`` on Redis and SQLite.

The producer/consumer session, signed, run against a server of each mode:
every Redis command the span mode shows as a CLIENT span is, in the default
mode, an event of the span that sent it (the CLIENT span's parent), with the
same name, statement, counts, server and database attributes, and an
``error.type`` where the span had an error status (a new Redis's first
EVALSHA: NOSCRIPT); in the default and the stable conventions. No
argument, no message body in either; the event's duration within its span;
each a line of the tree ``zaqar-otel listen`` prints.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from harness.tracing import OTEL_SERVER, REDIS_SCOPE, ProfiledSession, tracing
from zaqar_otel.backends import redis_commands
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import render_tree, span_detail
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional

CONVENTIONS = {"default": "", "stable": "database,http"}
# The server's own Redis port differs between the two servers.
PORTS = {"net.peer.port", "server.port"}

Fact = tuple[str, str, frozenset[tuple[str, Any]], bool]


def _session(mode: str, command_spans: bool) -> list[ReceivedSpan]:
    with RedisServer() as redis, OTLPReceiver() as receiver:
        extra = tracing(receiver, profiler={
            "redis_command_spans": str(command_spans).lower()})
        env = {"OTEL_SEMCONV_STABILITY_OPT_IN": CONVENTIONS[mode]}
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                         env=env) as server:
            session = ProfiledSession(server, receiver, "events")
            assert "Traceback" not in server.log_text()
        for span in session.spans:
            assert "marker-" not in repr((span.attributes, span.events)), span
        return session.spans


def _as_spans(spans: list[ReceivedSpan]) -> Counter[Fact]:
    by_id = {s.span_id: s for s in spans}
    return Counter(
        (by_id[s.parent_span_id].name, s.name,
         frozenset((k, v) for k, v in s.attributes.items() if k not in PORTS),
         s.status_code == "ERROR")
        for s in spans if s.scope == REDIS_SCOPE)


def _as_events(spans: list[ReceivedSpan]) -> Counter[Fact]:
    facts: Counter[Fact] = Counter()
    for span in spans:
        for name, attributes in span.events:
            if "db.redis.args_length" not in attributes and \
                    "db.redis.pipeline_length" not in attributes:
                continue
            duration = attributes[redis_commands.DURATION]
            assert 0 < duration * 1e9 <= span.end_ns - span.start_ns, (span, name)
            facts[(span.name, name, frozenset(
                (k, v) for k, v in attributes.items()
                if k not in PORTS | {redis_commands.DURATION, "error.type"}),
                "error.type" in attributes)] += 1
    return facts


@pytest.mark.parametrize("mode", CONVENTIONS)
def test_each_command_span_is_an_event_of_its_parent_with_the_same_facts(
        mode: str) -> None:
    spans = _session(mode, command_spans=True)
    events = _session(mode, command_spans=False)
    as_spans, as_events = _as_spans(spans), _as_events(events)
    assert sum(as_spans.values()) > 20, render_tree(spans)
    assert any(error for *_, error in as_events), "no NOSCRIPT error recorded"
    assert as_events == as_spans, (
        f"only as spans: {as_spans - as_events}\n"
        f"only as events: {as_events - as_spans}")
    # The default mode sends no Redis span; the rest of the trace is the same.
    assert not [s for s in events if s.scope == REDIS_SCOPE]
    others = Counter((s.name, s.kind) for s in spans if s.scope != REDIS_SCOPE)
    assert Counter((s.name, s.kind) for s in events) == others
    # As zaqar-otel listen and trace show print them: a line each, under
    # the span that sent it, with its statement and error.
    tree = render_tree(events, span_detail)
    assert re.search(r"\n +EVALSHA \[event\] \d+\.\d\dms  EVALSHA \? .*"
                     r"  ERROR: NoScriptError\n +SCRIPT LOAD \[event\] ", tree), tree
