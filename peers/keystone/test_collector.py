"""``openstack --os-profile KEY messaging ...`` through the collector as shipped.

The stack of test_openstack_cli.py (:class:`harness.keystone_stack.Stack`):
Keystone (osprofiler's own OTLP driver) and Zaqar (zaqar-otel) export to
otelcol-zaqar running ``config/otel-collector.yaml`` (tail sampling, its
shipped 10 s decision wait), which exports to Jaeger. Each command's trace,
found in Jaeger by the ``Trace ID`` the CLI printed, is kept by the
"requested" policy and kept whole: the CLI's Keystone calls, Zaqar's request,
and Keystone's spans under keystonemiddleware's calls, which reach the
collector from another process on their own schedule. Zero warnings in
Jaeger. Every command of ``COMMANDS`` (queue create, list, message post,
claim create, queue delete) runs first, then their traces are awaited
together: one decision wait for the five, not one each. Needs Keystone's
venv and the CLI (``make peer-keystone``), Jaeger and the collector
(``make backends``); skips without them, fails when ``CI`` is set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.backends import Collector, Jaeger, metric_values
from harness.keystone import CliResult
from harness.keystone_stack import (
    COMMANDS,
    KEYSTONE_SERVICE,
    REQUESTS_SCOPE,
    Stack,
    all_whole_in_jaeger,
    assert_one_jaeger_tree,
    require_stack,
    tags,
)
from harness.receivers import BackendReceiver

# The CLI's own calls to Keystone: version discovery, then the token.
CLI_KEYSTONE_CALLS = {"WSGI_GET_/v3", "WSGI_POST_/v3/auth/tokens"}


@pytest.fixture(scope="module")
def tier() -> Iterator[tuple[Jaeger, Collector, Stack]]:
    require_stack()
    with Jaeger() as jaeger, Collector(jaeger.otlp_grpc) as collector, \
            Stack(receiver=BackendReceiver(collector)) as running:
        yield jaeger, collector, running


@pytest.fixture(scope="module")
def commands(tier: tuple[Jaeger, Collector, Stack]) -> dict[str, tuple[
        CliResult, dict[str, Any]]]:
    """Each command of ``COMMANDS``, run in order (each needs the one before
    it: the queue, its message, the claim), by its route: the CLI's result
    and the trace Jaeger holds under the Trace ID it printed, once whole."""
    jaeger, _, stack = tier
    results: dict[str, CliResult] = {}
    for args, route in COMMANDS:
        result = stack.cli(args)
        assert result.returncode == 0, result.stderr
        assert result.trace_id, result.stderr
        results[route] = result
    traces = all_whole_in_jaeger(jaeger, {
        uuid.UUID(r.trace_id).hex: route for route, r in results.items()})
    return {route: (r, traces[uuid.UUID(r.trace_id).hex])
            for route, r in results.items()}


@pytest.mark.parametrize(("args", "route"), COMMANDS,
                         ids=[" ".join(a[1:3]) for a, _ in COMMANDS])
def test_the_cli_trace_kept_whole_through_the_collector(
        commands: dict[str, tuple[CliResult, dict[str, Any]]],
        args: list[str], route: str) -> None:
    result, trace = commands[route]
    assert trace["traceID"] == uuid.UUID(result.trace_id).hex
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
    # The message's own spans, where the command moves messages.
    kinds = {tags(s)["span.kind"] for s in spans}
    assert ("producer" in kinds) == ("post" in args)
    assert ("consumer" in kinds) == ("claim" in args)
    print(f"\n{' '.join(args[1:3])}: {len(spans)} spans "
          f"({sum(service[s['processID']] == 'zaqar' for s in spans)} Zaqar's)")


def test_the_requested_policy_kept_every_command(
        tier: tuple[Jaeger, Collector, Stack],
        commands: dict[str, tuple[CliResult, dict[str, Any]]]) -> None:
    """An unprofiled command is not traced at all; the collector's
    "requested" policy voted for each profiled command's trace."""
    jaeger, collector, stack = tier
    plain = stack.cli(["messaging", "queue", "list"], profile=False)
    assert plain.returncode == 0 and "Trace ID" not in plain.stderr
    votes = {labels["policy"]: value for labels, value in metric_values(
        collector.telemetry(), "otelcol_processor_tail_sampling_count_traces_sampled")
        if labels.get("sampled") == "true"}
    # The profiled commands, nothing else.
    assert votes.get("requested", 0) == len(commands) == len(COMMANDS)
    # What Jaeger holds of Zaqar: requested traces only (sample_ratio is 0,
    # so Zaqar exported nothing else).
    for trace_id in jaeger.trace_ids("zaqar"):
        trace = jaeger.trace(trace_id)
        assert trace is not None
        assert {tags(s).get("zaqar_otel.trace_origin") for s in trace["spans"]
                if tags(s)["span.kind"] == "server"
                and trace["processes"][s["processID"]]["serviceName"] == "zaqar"
                } == {"osprofiler"}
