"""The scale-out collector tier, as shipped, on loopback.

2 ``zaqar-otel-server`` processes and a client service (harness/scale_out.py)
→ 2 gateways (``config/otel-collector-gateway.yaml``: load_balancing by trace
id) → 2 samplers (``config/otel-collector.yaml``, decision_wait 3 s through
``OTELCOL_DECISION_WAIT``) → Jaeger v2. Every trace has its client span sent
through one gateway and its Zaqar spans through the other, so a trace is whole
in Jaeger only if both halves met at one sampler.

A few hundred requests (signed, unsigned, errors, slow) at 6 at a time, then:

- every kept trace whole in Jaeger (client span and Zaqar's, one tree, no
  warning): 0 partial traces; every dropped trace absent;
- the policies decide per trace as one collector would: exactly the signed,
  error and slow traces, and the unsigned ones whose id the probabilistic
  policy's hash keeps (computed here), each trace decided once, by one sampler;
- counts balance: spans the services sent (as they count them: the client's
  acknowledged exports, Zaqar's own ``zaqar_otel.spans.exported``) = spans
  the gateways accepted = spans they sent = spans the samplers accepted;
  what the samplers sent = what Jaeger holds; nothing refused, failed,
  dropped (``…_sampling_trace_dropped_too_early`` 0) or late.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.backends import counter
from harness.scale_out import (
    CLIENT_SERVICE,
    SLOW_MS,
    ClientService,
    Counts,
    Sent,
    Tier,
    baseline_keeps,
    plan,
    run_traffic,
    tier,
    warm_up,
    zaqar_pair,
)
from harness.stats import binomial_bounds
from zaqar_otel.demo.processes import RedisServer

pytestmark = [pytest.mark.functional, pytest.mark.backends]

TRACES = 300
SLOW = 6
# A client span this close to the latency threshold may fall either side of
# it in the collector's view (the trace's extent): not asserted either way.
AMBIGUOUS = (0.8 * SLOW_MS / 1000, 1.2 * SLOW_MS / 1000)


@dataclass
class Run:
    tier: Tier
    sent: list[Sent]
    client_exported: int
    client_failed: int
    delta: Counts
    after: Counts
    zaqar_logs: list[str]
    scrapes: list[str]
    zaqar_exported: float  # zaqar_otel.spans.exported, over the traffic
    found: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def _zaqar_exported(t: Tier) -> float:
    """zaqar_otel.spans.exported of both Zaqar processes: their metrics, on
    the samplers' prometheus exporters."""
    return sum(counter(sampler.scrape(), "zaqar_otel_spans_exported")
               for sampler in t.samplers)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with tier(samplers=2, gateways=2, decision_wait="3s") as t, \
            RedisServer() as redis, zaqar_pair(redis, t.gateways) as zaqars:
        warm_up(zaqars)
        # Zaqar exports its metrics every 500 ms: wait_quiet's 3 s of quiet
        # leave them the time to count every span exported before.
        before = t.wait_quiet()
        exported_before = _zaqar_exported(t)
        client = ClientService(t.gateways)
        try:
            sent = run_traffic(client, zaqars, plan(TRACES, slow=SLOW), threads=6,
                               timeout=300)
        finally:
            client.shutdown()  # flushes the client's spans
        after = t.wait_quiet()
        exported = _zaqar_exported(t) - exported_before
        scrapes = [sampler.scrape() for sampler in t.samplers]
        for zaqar in zaqars:
            zaqar.stop()  # SIGTERM: Zaqar flushes what it holds (nothing left)
        assert t.wait_quiet().gateway["accepted"] == after.gateway["accepted"]
        result = Run(t, sent, client.exported, client.failed, after.minus(before),
                     after, [z.log_text() for z in zaqars], scrapes, exported)
        for s in sent:
            result.found[s.trace_id] = t.jaeger.trace(s.trace_id)
        yield result


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def _service(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def _zaqar_spans(trace: dict[str, Any]) -> list[str]:
    return sorted(s["operationName"] for s in trace["spans"]
                  if _service(trace, s) == "zaqar")


def _expected_kept(s: Sent) -> bool | None:
    """What the shipped policies decide for this trace; None: either."""
    if s.kind in ("requested", "error", "slow"):
        return True
    if baseline_keeps(s.trace_id):
        return True
    if AMBIGUOUS[0] <= s.seconds <= AMBIGUOUS[1]:
        return None
    return s.seconds > SLOW_MS / 1000


def test_every_request_was_served(run: Run) -> None:
    statuses = collections.Counter((s.kind, s.status) for s in run.sent)
    kinds = collections.Counter(s.kind for s in run.sent)
    assert statuses == {(k, 404 if k == "error" else 201): n for k, n in kinds.items()}
    assert len({s.trace_id for s in run.sent}) == TRACES
    # Every trace went through both gateways: the client's span through one,
    # Zaqar's through the other.
    assert all(s.zaqar != s.client_gateway for s in run.sent)
    for log in run.zaqar_logs:
        assert "dropping spans" not in log
        assert "Traceback" not in log


def test_every_kept_trace_is_whole_and_every_dropped_one_absent(run: Run) -> None:
    partial = []
    shapes: dict[str, set[tuple[str, ...]]] = collections.defaultdict(set)
    for s in run.sent:
        trace = run.found[s.trace_id]
        if trace is None:
            continue
        spans = trace["spans"]
        services = collections.Counter(_service(trace, x) for x in spans)
        ids = {x["spanID"] for x in spans}
        roots = [x for x in spans if not any(
            r["refType"] == "CHILD_OF" and r["spanID"] in ids for r in x["references"])]
        whole = (services[CLIENT_SERVICE] == 1 and services["zaqar"] >= 2
                 and len(ids) == len(spans) and len(roots) == 1
                 and _service(trace, roots[0]) == CLIENT_SERVICE
                 and not any(x.get("warnings") for x in spans))
        if not whole:
            partial.append((s.kind, s.trace_id, services))
        shapes[s.kind].add(tuple(_zaqar_spans(trace)))
    assert partial == []
    # The same request, the same spans: no trace lost a span on the way.
    assert {k: len(v) for k, v in shapes.items()} == {
        "requested": 1, "unsigned": 1, "error": 1, "slow": 1}, shapes
    # A dropped trace: not one span of it (neither half) in Jaeger.
    in_jaeger = (run.tier.jaeger.trace_ids("zaqar")
                 | run.tier.jaeger.trace_ids(CLIENT_SERVICE))
    dropped = {s.trace_id for s in run.sent if run.found[s.trace_id] is None}
    assert dropped and dropped.isdisjoint(in_jaeger)


def test_the_policies_decide_per_trace_as_one_collector_would(run: Run) -> None:
    wrong = []
    for s in run.sent:
        expected = _expected_kept(s)
        kept = run.found[s.trace_id] is not None
        if expected is not None and kept != expected:
            wrong.append((s.kind, s.trace_id, round(s.seconds, 3), kept))
    assert wrong == []
    kinds = collections.Counter(s.kind for s in run.sent)
    policies = run.delta.policies
    # Each policy evaluated every trace once, on one sampler.
    assert policies[("requested", "true")] == kinds["requested"]
    assert policies[("errors", "true")] == kinds["error"]
    assert policies[("slow", "true")] >= kinds["slow"]
    assert policies[("baseline", "true")] == sum(
        baseline_keeps(s.trace_id) for s in run.sent)
    for policy in ("requested", "errors", "slow", "baseline"):
        assert policies[(policy, "true")] + policies[(policy, "false")] == TRACES
    # The share the probabilistic policy keeps is its percentage.
    low, high = binomial_bounds(TRACES, 0.10)
    assert low <= policies[("baseline", "true")] <= high


def test_each_trace_is_decided_once_by_one_sampler(run: Run) -> None:
    # A trace split between samplers would be new (and decided) at both.
    assert run.delta.sampler["new_traces"] == TRACES
    assert run.delta.sampler["decided"] == TRACES
    # Both samplers took a share of the trace ids.
    low, high = binomial_bounds(TRACES, 0.5)
    shares = [s["new_traces"] for s in run.delta.per_sampler]
    assert all(low <= n <= high for n in shares), shares
    # Both gateways carried spans.
    assert all(g["accepted"] > 0 for g in run.delta.per_gateway)


def test_span_counts_balance_across_the_tiers(run: Run) -> None:
    d = run.delta
    # Spans sent by the services, as each counts them: the client's SDK
    # export (every one acknowledged), and Zaqar's own
    # zaqar_otel.spans.exported (spans its collector accepted).
    assert (run.client_exported, run.client_failed) == (TRACES, 0)
    assert run.zaqar_exported > 0
    services = run.client_exported + run.zaqar_exported
    assert d.gateway["accepted"] == services
    assert d.gateway["sent"] == services
    assert d.sampler["accepted"] == services
    nothing = ("refused", "send_failed", "enqueue_failed", "memory_refused")
    assert {k: d.gateway[k] for k in nothing} == dict.fromkeys(nothing, 0)
    assert {k: d.sampler[k] for k in nothing} == dict.fromkeys(nothing, 0)
    assert d.sampler["late_spans"] == 0
    # No trace left the decision window undecided (num_traces full).
    assert d.sampler["dropped_too_early"] == 0
    # Zaqar's spans per request are those of any kept trace of its kind (all
    # kept traces of a kind have the same, checked above): the same count.
    per_kind: dict[str, int] = {}
    for s in run.sent:
        trace = run.found[s.trace_id]
        if trace is not None:
            per_kind[s.kind] = len(_zaqar_spans(trace))
    assert run.zaqar_exported == sum(per_kind[s.kind] for s in run.sent)
    # What the samplers sent is what Jaeger holds (start-up requests included:
    # the totals since the tier started).
    jaeger = run.tier.jaeger
    ids = jaeger.trace_ids("zaqar") | jaeger.trace_ids(CLIENT_SERVICE)
    held = sum(len(t["spans"]) for t in (jaeger.trace(i) for i in ids) if t)
    assert run.after.sampler["sent"] == held
    kept = sum(len(t["spans"]) for t in run.found.values() if t)
    assert kept <= held


_COUNT_LINE = re.compile(r"^\w+_count\{(.*)\}\s+(\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _counts(text: str) -> list[tuple[dict[str, str], float]]:
    """The ``*_count`` samples of histograms (label values may hold braces:
    routes such as ``/v2/queues/{queue_name}``)."""
    return [(dict(_LABEL.findall(labels)), float(value))
            for labels, value in _COUNT_LINE.findall(text)]


def test_each_zaqar_process_metrics_are_on_one_sampler(run: Run) -> None:
    # The gateways route metrics by resource: every series of one Zaqar
    # process lands on one sampler's prometheus exporter, whole.
    posts = collections.Counter[str]()
    where: dict[str, set[int]] = collections.defaultdict(set)
    for n, text in enumerate(run.scrapes):
        for labels, value in _counts(text):
            if labels.get("job") != "zaqar" or "http_route" not in labels:
                continue
            where[labels["instance"]].add(n)
            status = labels.get("http_response_status_code",
                                labels.get("http_status_code"))
            if (labels["http_route"] == "/v2/queues/{queue_name}/messages"
                    and status == "201"):
                posts[labels["instance"]] += int(value)
    assert len(where) == 2 and all(len(v) == 1 for v in where.values()), where
    # Every post counted (metrics are not sampled): the warm-up's 2 per
    # process and the traffic's.
    assert sum(posts.values()) == 2 * 2 + sum(s.kind != "error" for s in run.sent)
