"""``openstack --os-profile KEY messaging ...`` through the scale-out tier.

The stack of test_openstack_cli.py (:class:`peers.keystone.stack.Stack`), its
two services sending through *different* gateways of the scale-out tier
(harness/scale_out.py): Keystone (osprofiler's own OTLP driver) to
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

import uuid
from collections.abc import Iterator

import pytest

from harness.receivers import BackendReceiver
from harness.scale_out import Tier, tier
from peers.keystone import stack as stack_module
from peers.keystone.stack import (
    COMMANDS,
    KEYSTONE_SERVICE,
    REQUESTS_SCOPE,
    Stack,
    assert_one_jaeger_tree,
    require_stack,
    tags,
    whole_in_jaeger,
)

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Tier, Stack]]:
    require_stack()
    with tier(samplers=2, gateways=2, decision_wait=None) as t, \
            pytest.MonkeyPatch.context() as patch:
        # Zaqar exports to what the stack takes for its receiver: gateway 1;
        # Keystone's osprofiler driver to gateway 2.
        patch.setattr(stack_module, "OTLPReceiver",
                      lambda: BackendReceiver(t.gateways[0]))
        keystone_profiler = stack_module.keystone_profiler
        patch.setattr(stack_module, "keystone_profiler", lambda _receiver: (
            keystone_profiler(BackendReceiver(t.gateways[1]))))  # type: ignore[arg-type]
        with Stack() as stack:
            yield t, stack


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
        trace = whole_in_jaeger(t.jaeger, trace_id, route)
        spans = trace["spans"]
        service, _, parent = assert_one_jaeger_tree(trace)
        zaqar_roots = [s for s in spans if parent[s["spanID"]] is None
                       and service[s["processID"]] == "zaqar"]
        assert [s["operationName"] for s in zaqar_roots] == [route]
        # keystonemiddleware's token checks (Zaqar's CLIENT spans, through
        # gateway 1), Keystone's SERVER span under each (through gateway 2).
        calls = [s for s in spans
                 if tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
        assert calls
        for call in calls:
            below = [s for s in spans if parent[s["spanID"]] == call["spanID"]]
            assert [(service[s["processID"]], tags(s)["span.kind"])
                    for s in below] == [(KEYSTONE_SERVICE, "server")]
    # Both gateways carried spans; the samplers saw each trace once
    # (Zaqar's start-up requests are not traced: sample_ratio is 0).
    delta = t.wait_quiet(timeout=120).minus(before)
    assert all(g["accepted"] > 0 for g in delta.per_gateway), delta.per_gateway
    assert delta.sampler["new_traces"] == len(trace_ids)
    assert delta.sampler["accepted"] == delta.gateway["accepted"]
    assert delta.gateway["refused"] == delta.sampler["refused"] == 0
