"""The scale-out tier through its three faults, as collector/README.md's
"Faults" section states them.

The tier of test_scale_out.py (2 ``zaqar-otel-server`` processes and a
client service → 2 gateways → 2 samplers, ``decision_wait`` 3 s → Jaeger),
paced traffic (:func:`harness.scale_out.run_fault`, the code of
``make scale-out SCALE_OUT_ARGS=faults``), one fault after the other on the
same tier, each mid-run: sampler 1 SIGKILLed and restarted; gateway 1
SIGKILLed and restarted; Jaeger stopped (SIGTERM: its in-memory traces go
with it) and started again. Shorter outages than the bench's (5 s, 5 s,
8 s instead of 10 s, 10 s, 30 s): what a sampler's or Jaeger's outage loses
depends on what it held when it went, not on how long it stayed down, within
the 120 s the gateways' and samplers' retries last; what a gateway's loses
grows with its outage, and the window asserted below spans the outage.

For each fault:

- the services do not notice: every request answered as without a fault
  (201, or 404 for the missing message), none waiting on the export
  (under 5 s; a request that waited for a dead collector would take the
  exporter's 10 s timeout);
- losses only where the README says: a killed sampler's decision window
  (traces sent in the ``decision_wait`` + 4 s before the kill: the decision
  tick, the batch processor's 2 s, a margin); a killed gateway's queue and
  the spans the services could not send while it was down (dropped after
  their retries, or delivered after the trace's ``decision_wait``: decided
  on its other half, through the other gateway); Jaeger's own memory
  (what it held before the stop), nothing the tier held: every trace
  decided while Jaeger was down reaches it once it is back, from the
  samplers' retry queue;
- every trace due (one the policies keep) sent after that window is whole
  in Jaeger: 0 lost, 0 partial, and the tier recovers (the restarted
  sampler decides new traces, the restarted gateway carries spans).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.scale_out import (
    FaultRun,
    Tier,
    expected_kept,
    is_whole,
    pipeline_empty,
    run_fault,
    tier,
    warm_up,
    zaqar_dropped,
    zaqar_pair,
)
from zaqar_otel.demo.processes import RedisServer

pytestmark = [pytest.mark.functional, pytest.mark.backends]

DECISION_WAIT = 3.0
RATE, LEAD, TAIL = 20.0, 10.0, 4.0
DOWN = {"sampler": 5.0, "gateway": 5.0, "jaeger": 8.0}
# How long a sampler holds a trace after its first span: decision_wait, up
# to one decision tick (1 s), the batch processor's timeout (2 s), and a
# margin for a loaded machine.
HELD = DECISION_WAIT + 1 + 2 + 1
# A gateway's queue: flushed every 200 ms; a margin for what is in flight.
GATEWAY_HELD = 1.0


@dataclass
class Outcome:
    run: FaultRun
    # Where a due trace may be lost: sent in [lost_from, safe_from).
    lost_from: float
    safe_from: float
    found: dict[str, dict[str, Any] | None]
    zaqar_dropped: list[dict[str, int]]
    counts: dict[str, Any] = field(default_factory=dict)


def _window(run: FaultRun) -> tuple[float, float]:
    if run.fault == "sampler":
        # Through its outage too: the two gateways retry the halves of a
        # trace routed to it independently (backing off 1 s, 2 s, ...), and
        # the restarted sampler decides 3 s after the first half comes: a
        # later half makes it partial (a CI run here saw 5). With the
        # shipped 10 s decision_wait the bench lost none (collector/README).
        return run.fault_at - HELD, run.back_at
    if run.fault == "gateway":
        return run.fault_at - GATEWAY_HELD, run.back_at
    # Jaeger: a trace decided after the stop is the tier's to keep; before
    # it, it went to Jaeger's memory.
    return run.fault_at - HELD, run.fault_at - DECISION_WAIT


def _wait_whole(t: Tier, run: FaultRun, safe_from: float,
                timeout: float = 90.0) -> None:
    """Until every due trace sent from ``safe_from`` on is whole in Jaeger
    (the gateways' and samplers' retries back off up to 10 s and 30 s) and
    the samplers hold nothing more."""
    waiting = [s.trace_id for s in run.sent if s.at >= safe_from and expected_kept(s)]
    deadline = time.monotonic() + timeout
    while waiting or not pipeline_empty(t):
        if time.monotonic() > deadline:
            raise AssertionError(f"{run.fault}: {len(waiting)} due traces not whole "
                                 f"in Jaeger after {timeout:.0f}s")
        waiting = [i for i in waiting
                   if not ((trace := t.jaeger.trace(i)) and is_whole(trace))]
        time.sleep(1.0)
    time.sleep(2.0)  # Jaeger's own batch


@pytest.fixture(scope="module")
def outcomes() -> Iterator[dict[str, Outcome]]:
    results: dict[str, Outcome] = {}
    with tier(samplers=2, gateways=2, decision_wait="3s") as t, \
            RedisServer() as redis, zaqar_pair(redis, t.gateways) as zaqars:
        warm_up(zaqars)
        t.wait_quiet()
        for name in ("sampler", "gateway", "jaeger"):
            dropped_before = [zaqar_dropped(z.log_text())["reported"] for z in zaqars]
            run = run_fault(t, zaqars, name, DOWN[name], RATE, LEAD, TAIL)
            lost_from, safe_from = _window(run)
            _wait_whole(t, run, safe_from)
            results[name] = Outcome(
                run, lost_from, safe_from,
                {s.trace_id: t.jaeger.trace(s.trace_id) for s in run.sent},
                [{"reported": zaqar_dropped(z.log_text())["reported"] - before}
                 for z, before in zip(zaqars, dropped_before, strict=True)],
                {"per_sampler": t.counts().per_sampler,
                 "per_gateway": t.counts().per_gateway})
        yield results


FAULT_NAMES = ("sampler", "gateway", "jaeger")


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_the_services_do_not_notice(outcomes: dict[str, Outcome], name: str) -> None:
    o = outcomes[name]
    wrong = [(s.kind, s.status) for s in o.run.sent
             if s.status != (404 if s.kind == "error" else 201)]
    assert wrong == []
    slowest = max(s.seconds for s in o.run.sent if s.kind != "slow")
    assert slowest < 5.0, slowest
    if name != "gateway":
        # Nothing to retry at the services: their collector was up.
        assert o.run.client_failed == 0
        assert [d["reported"] for d in o.zaqar_dropped] == [0, 0]


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_losses_only_within_the_stated_window(outcomes: dict[str, Outcome],
                                              name: str) -> None:
    o = outcomes[name]
    outside, inside = [], 0
    for s in o.run.sent:
        if not expected_kept(s) or s.at >= o.safe_from:
            continue
        trace = o.found[s.trace_id]
        whole = trace is not None and is_whole(trace)
        if s.at >= o.lost_from:
            inside += not whole
        elif name == "jaeger":
            # Sent to Jaeger's memory before it stopped: gone with it (the
            # tier did deliver them: they were in before the stop).
            if trace is not None:
                outside.append(("kept across Jaeger's restart", s.trace_id))
        elif not whole:
            outside.append((s.kind, s.trace_id, round(s.at - o.run.fault_at, 2)))
    assert outside == []
    if name == "sampler":
        # The killed sampler's share of its decision window is lost.
        assert inside > 0


@pytest.mark.parametrize("name", FAULT_NAMES)
def test_every_trace_after_the_window_is_whole(outcomes: dict[str, Outcome],
                                               name: str) -> None:
    o = outcomes[name]
    due = [s for s in o.run.sent if s.at >= o.safe_from and expected_kept(s)]
    bad = [(s.kind, s.trace_id) for s in due
           if not ((trace := o.found[s.trace_id]) and is_whole(trace))]
    assert due and bad == []
    # Traces sent after the recovery among them, whole: the tier recovered.
    assert any(s.at >= o.run.back_at for s in due)
    if name == "jaeger":
        # Decided while Jaeger was down, kept by the samplers' retry queue.
        assert any(s.at < o.run.back_at - DECISION_WAIT for s in due)


def test_the_restarted_collectors_take_their_share_again(
        outcomes: dict[str, Outcome]) -> None:
    # Counted from their restart: sampler 1 decided traces again, gateway 1
    # carried spans again.
    assert outcomes["sampler"].counts["per_sampler"][0]["decided"] > 0
    assert outcomes["gateway"].counts["per_gateway"][0]["accepted"] > 0
    # Nothing the samplers held for Jaeger was given up.
    for o in outcomes.values():
        assert all(s["send_failed"] == 0 for s in o.counts["per_sampler"])
