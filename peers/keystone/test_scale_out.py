"""``openstack --os-profile KEY messaging ...`` through the scale-out tier.

The stack of test_openstack_cli.py (:class:`harness.keystone_stack.Stack`), its
services sending through *different* gateways of the scale-out tier
(harness/scale_out.py): Keystone (osprofiler's own OTLP driver) to
gateway 2; Zaqar under gunicorn (``zaqar_otel.wsgi:application``,
``--workers 2``), worker 1 to gateway 1 and worker 2 to gateway 2; the
gateways (``config/otel-collector-gateway.yaml``) route by trace id to 2
samplers (``config/otel-collector.yaml``, its shipped 10 s decision wait) →
Jaeger. Each command's trace, found by the ``Trace ID`` the CLI printed, is
whole in Jaeger: the CLI's Keystone calls and Keystone's spans under
keystonemiddleware's calls (through gateway 2) with Zaqar's (through either),
one tree, zero warnings; and the tier saw each trace as new at one sampler
only. Then a short mixed load (signed, unsigned, error, slow; two Zaqar calls
per trace, each token validated by Keystone): every kept trace whole, with
Keystone's spans, some with both workers' (``make scale-out
SCALE_OUT_ARGS=combined`` is the long run).
Needs Keystone's venv and the CLI (``make peer-keystone``), Jaeger and the
collector (``make backends``); skips without them, fails when ``CI`` is set.
"""

from __future__ import annotations

import collections
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.keystone_stack import (
    COMMANDS,
    KEYSTONE_SERVICE,
    REQUESTS_SCOPE,
    Stack,
    assert_one_jaeger_tree,
    combined_shape,
    require_stack,
    tags,
    whole_in_jaeger,
)
from harness.receivers import BackendReceiver
from harness.scale_out import (
    ClientService,
    Tier,
    expected_kept,
    gunicorn_workers,
    plan,
    run_traffic,
    tier,
)
from harness.tracing import KEY

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Tier, Stack]]:
    require_stack()
    with tier(samplers=2, gateways=2, decision_wait=None) as t:
        command, env = gunicorn_workers(Path(tempfile.mkdtemp()), t.gateways)
        with Stack(receiver=BackendReceiver(t.gateways[0]),
                   keystone_receiver=BackendReceiver(t.gateways[1]),
                   zaqar_command=command, zaqar_env=env,
                   # Each worker's endpoint comes from gunicorn's post_fork;
                   # every request traced (the tier samples).
                   otel={"endpoint": None, "sample_ratio": "1.0",
                         "schedule_delay": "200"}) as stack:
            yield t, stack


def test_each_command_trace_is_whole_across_both_gateways(
        running: tuple[Tier, Stack]) -> None:
    t, stack = running
    before = t.wait_quiet(timeout=120)  # start-up requests decided
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
    # Gateway 2 carried Keystone's spans (Zaqar's went through the gateway
    # of the worker that served the command); the samplers saw each trace
    # once (nothing else was traced meanwhile).
    delta = t.wait_quiet(timeout=120).minus(before)
    assert delta.per_gateway[1]["accepted"] > 0, delta.per_gateway
    assert delta.sampler["new_traces"] == len(trace_ids)
    assert delta.sampler["accepted"] == delta.gateway["accepted"]
    assert delta.gateway["refused"] == delta.sampler["refused"] == 0


def test_mixed_traces_span_keystone_and_both_workers(
        running: tuple[Tier, Stack]) -> None:
    t, stack = running
    auth = {"X-Auth-Token": stack.keystone.token(stack.user)}
    client = ClientService(t.gateways, key=KEY)
    # Signed first: the calls that validate the token (the first each worker
    # serves) are in traces the tier keeps.
    kinds = ["requested"] * 4 + plan(26, requested=0.2, errors=0.2, slow=2)
    try:
        sent = run_traffic(client, [stack.zaqar], kinds, threads=4, timeout=120,
                           auth=auth, calls=2)
    finally:
        client.shutdown()
    t.wait_quiet(timeout=120)
    assert collections.Counter((s.kind, s.status) for s in sent) == {
        (k, 404 if k == "error" else 201): n
        for k, n in collections.Counter(kinds).items()}
    shapes, wrong = [], []
    for s in sent:
        trace = t.jaeger.trace(s.trace_id)
        if expected_kept(s) not in (None, trace is not None):
            wrong.append((s.kind, s.trace_id))
        if trace is not None:
            shapes.append(combined_shape(trace))
    assert wrong == []
    assert [s for s in shapes if not s["whole"]] == []
    # Keystone validated the token the first time each worker saw it, under
    # keystonemiddleware's call, in the trace of that call; calls of one
    # trace served by both workers.
    assert sum(s["keystone_spans"] > 0 for s in shapes) >= 1
    # Through both gateways: worker 1's spans through gateway 1, worker 2's
    # and Keystone's through gateway 2.
    assert sum(s["workers"] == 2 for s in shapes) >= 1
