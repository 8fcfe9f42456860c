"""``openstack --os-profile KEY messaging ...`` through the collector as shipped.

The stack of test_openstack_cli.py (:class:`peers.keystone.stack.Stack`):
Keystone (osprofiler's own OTLP driver) and Zaqar (zaqar-otel) export to
otelcol-zaqar running ``config/otel-collector.yaml`` (tail sampling, its
shipped 10 s decision wait), which exports to Jaeger. Each command's trace,
found in Jaeger by the ``Trace ID`` the CLI printed, is kept by the
"requested" policy and kept whole: the CLI's Keystone calls, Zaqar's request,
and Keystone's spans under keystonemiddleware's calls, which reach the
collector from another process on their own schedule. Zero warnings in
Jaeger. Needs Keystone's venv and the CLI (``make peer-keystone``), Jaeger and
the collector (``make backends``); skips without them, fails when ``CI`` is set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.backends import Collector, Jaeger, metric_values
from harness.receivers import BackendReceiver
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

# The CLI's own calls to Keystone: version discovery, then the token.
CLI_KEYSTONE_CALLS = {"WSGI_GET_/v3", "WSGI_POST_/v3/auth/tokens"}


@pytest.fixture(scope="module")
def tier() -> Iterator[tuple[Jaeger, Collector, Stack]]:
    require_stack()
    with Jaeger() as jaeger, Collector(jaeger.otlp_grpc) as collector, \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module, "OTLPReceiver",
                      lambda: BackendReceiver(collector))
        with Stack() as running:
            yield jaeger, collector, running


@pytest.mark.parametrize(("args", "route"), [COMMANDS[0], COMMANDS[2]],
                         ids=["queue create", "message post"])
def test_the_cli_trace_kept_whole_through_the_collector(
        tier: tuple[Jaeger, Collector, Stack], args: list[str], route: str) -> None:
    jaeger, _, stack = tier
    result = stack.cli(args)
    assert result.returncode == 0, result.stderr
    assert result.trace_id, result.stderr
    trace_id = uuid.UUID(result.trace_id).hex
    trace = whole_in_jaeger(jaeger, trace_id, route)
    spans = trace["spans"]
    # Zaqar's and Keystone's spans, one tree, nothing Jaeger would warn of.
    service, by_id, parent = assert_one_jaeger_tree(trace)
    roots = [by_id[sid] for sid, p in parent.items() if p is None]
    assert sorted(s["operationName"] for s in roots
                  if service[s["processID"]] == KEYSTONE_SERVICE) == sorted(
        CLI_KEYSTONE_CALLS)
    zaqar_roots = [s for s in roots if service[s["processID"]] == "zaqar"]
    assert [s["operationName"] for s in zaqar_roots] == [route]
    assert tags(zaqar_roots[0])["zaqar_otel.trace_origin"] == "osprofiler"
    # keystonemiddleware's token checks: Zaqar's CLIENT spans, Keystone's
    # SERVER span under each (exported by the other process).
    calls = [s for s in spans if tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
    assert calls
    for call in calls:
        below = [s for s in spans if parent[s["spanID"]] == call["spanID"]]
        assert [(service[s["processID"]], tags(s)["span.kind"])
                for s in below] == [(KEYSTONE_SERVICE, "server")]


def test_the_requested_policy_kept_every_command(
        tier: tuple[Jaeger, Collector, Stack]) -> None:
    """An unprofiled command is not traced at all; the collector's
    "requested" policy voted for each profiled command's trace."""
    jaeger, collector, stack = tier
    plain = stack.cli(["messaging", "queue", "list"], profile=False)
    assert plain.returncode == 0 and "Trace ID" not in plain.stderr
    votes = {labels["policy"]: value for labels, value in metric_values(
        collector.telemetry(), "otelcol_processor_tail_sampling_count_traces_sampled")
        if labels.get("sampled") == "true"}
    # The two commands above (this test runs after them).
    assert votes.get("requested", 0) >= 2
    # What Jaeger holds of Zaqar: requested traces only (sample_ratio is 0,
    # so Zaqar exported nothing else).
    for trace_id in jaeger.trace_ids("zaqar"):
        trace = jaeger.trace(trace_id)
        assert trace is not None
        assert {tags(s).get("zaqar_otel.trace_origin") for s in trace["spans"]
                if tags(s)["span.kind"] == "server"
                and trace["processes"][s["processID"]]["serviceName"] == "zaqar"
                } == {"osprofiler"}
