"""``openstack --os-profile KEY messaging ...`` through the scale-out tier.

The stack of test_openstack_cli.py (:class:`peers.keystone.stack.Stack`), its
two services sending through *different* gateways of the scale-out tier
(tests/scale_out_support.py): Keystone (osprofiler's own OTLP driver) to
gateway 2, Zaqar (zaqar-otel) to gateway 1; the gateways
(``config/otel-collector-gateway.yaml``) route by trace id to 2 samplers
(``config/otel-collector.yaml``, its shipped 10 s decision wait) → Jaeger.
Each command's trace, found by the ``Trace ID`` the CLI printed, is whole in
Jaeger: the CLI's Keystone calls and Keystone's spans under keystonemiddleware's
calls (through one gateway) with Zaqar's (through the other), one tree, zero
warnings; and the tier saw each trace as new at one sampler only.
Needs Keystone's venv and the CLI (``make peer-keystone``), Jaeger and the
collector (``make backends``); skips without them, fails when ``CI`` is set.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from peers.keystone import stack as stack_module
from peers.keystone.keystone_process import keystone_venv, keystone_venv_ready
from peers.keystone.stack import COMMANDS, KEYSTONE_SERVICE, REQUESTS_SCOPE, Stack
from tests.scale_out_support import Tier, tier

pytestmark = pytest.mark.functional


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)



@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Tier, Stack]]:
    if not keystone_venv_ready():
        _unavailable(f"Keystone's venv (.cache/{keystone_venv().name}) is not "
                     "installed: run `make peer-keystone`")
    if not stack_module.openstack_bin().exists():
        _unavailable("the openstack CLI is not installed in this venv: "
                     "pip install python-openstackclient (or make peer-keystone)")
    with tier(samplers=2, gateways=2, decision_wait=None) as t, \
            pytest.MonkeyPatch.context() as patch:
        # Zaqar exports to what the stack takes for its receiver: gateway 1;
        # Keystone's osprofiler driver to gateway 2.
        patch.setattr(stack_module, "OTLPReceiver",
                      lambda: stack_module.CollectorReceiver(t.gateways[0]))
        keystone_profiler = stack_module.keystone_profiler
        patch.setattr(stack_module, "keystone_profiler", lambda _receiver: (
            keystone_profiler(stack_module.CollectorReceiver(t.gateways[1]))))  # type: ignore[arg-type]
        with Stack() as stack:
            yield t, stack


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def _whole(t: Tier, trace_id: str, route: str, timeout: float = 90.0) -> dict[str, Any]:
    """The trace once Zaqar's server span is in Jaeger, every
    keystonemiddleware call has Keystone's span under it, and 3 s passed
    without news (the decision waits 10 s; Keystone exports every 5 s)."""
    deadline = time.monotonic() + timeout
    count, trace = -1, None
    while time.monotonic() < deadline:
        trace = t.jaeger.trace(trace_id)
        spans = trace["spans"] if trace else []
        parents = {r["spanID"] for s in spans for r in s["references"]}
        calls = [s["spanID"] for s in spans
                 if _tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
        if (trace and any(s["operationName"] == route for s in spans) and calls
                and all(c in parents for c in calls) and len(spans) == count):
            return trace
        count = len(spans)
        time.sleep(3.0)
    raise AssertionError(f"trace {trace_id} not whole in Jaeger after "
                         f"{timeout:.0f}s: {count} spans")


def test_each_command_trace_is_whole_across_both_gateways(
        running: tuple[Tier, Stack]) -> None:
    t, stack = running
    before = t.counts()
    trace_ids = []
    for args, route in (COMMANDS[0], COMMANDS[2]):
        result = stack.cli(args)
        assert result.returncode == 0, result.stderr
        assert result.trace_id, result.stderr
        trace_id = uuid.UUID(result.trace_id).hex
        trace_ids.append(trace_id)
        trace = _whole(t, trace_id, route)
        spans = trace["spans"]
        service = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
        assert set(service.values()) == {"zaqar", KEYSTONE_SERVICE}
        assert [s["warnings"] for s in spans if s.get("warnings")] == []
        by_id = {s["spanID"]: s for s in spans}
        assert len(by_id) == len(spans)
        parent = {s["spanID"]: next((r["spanID"] for r in s["references"]
                                     if r["refType"] == "CHILD_OF"), None)
                  for s in spans}
        assert all(p in by_id for p in parent.values() if p is not None)
        zaqar_roots = [s for s in spans if parent[s["spanID"]] is None
                       and service[s["processID"]] == "zaqar"]
        assert [s["operationName"] for s in zaqar_roots] == [route]
        # keystonemiddleware's token checks (Zaqar's CLIENT spans, through
        # gateway 1), Keystone's SERVER span under each (through gateway 2).
        calls = [s for s in spans
                 if _tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
        assert calls
        for call in calls:
            below = [s for s in spans if parent[s["spanID"]] == call["spanID"]]
            assert [(service[s["processID"]], _tags(s)["span.kind"])
                    for s in below] == [(KEYSTONE_SERVICE, "server")]
    # Both gateways carried spans; the samplers saw each trace once
    # (Zaqar's start-up requests are not traced: sample_ratio is 0).
    delta = t.wait_quiet(timeout=120).minus(before)
    assert all(g["accepted"] > 0 for g in delta.per_gateway), delta.per_gateway
    assert delta.sampler["new_traces"] == len(trace_ids)
    assert delta.sampler["accepted"] == delta.gateway["accepted"]
    assert delta.gateway["refused"] == delta.sampler["refused"] == 0
