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

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from peers.keystone import stack as stack_module
from peers.keystone.keystone_process import keystone_venv, keystone_venv_ready
from peers.keystone.stack import COMMANDS, KEYSTONE_SERVICE, REQUESTS_SCOPE, Stack
from tests.backends_support import Collector, Jaeger, metric_values

# The CLI's own calls to Keystone: version discovery, then the token.
CLI_KEYSTONE_CALLS = {"WSGI_GET_/v3", "WSGI_POST_/v3/auth/tokens"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)



@pytest.fixture(scope="module")
def tier() -> Iterator[tuple[Jaeger, Collector, Stack]]:
    if not keystone_venv_ready():
        _unavailable(f"Keystone's venv (.cache/{keystone_venv().name}) is not "
                     "installed: run `make peer-keystone`")
    if not stack_module.openstack_bin().exists():
        _unavailable("the openstack CLI is not installed in this venv: "
                     "pip install python-openstackclient (or make peer-keystone)")
    with Jaeger() as jaeger, Collector(jaeger.otlp_grpc) as collector, \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module, "OTLPReceiver",
                      lambda: stack_module.CollectorReceiver(collector))
        with Stack() as running:
            yield jaeger, collector, running


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def _whole(jaeger: Jaeger, trace_id: str, route: str,
           timeout: float = 90.0) -> dict[str, Any]:
    """The trace once Zaqar's server span is in Jaeger, every
    keystonemiddleware call has Keystone's span under it, and 3 s passed
    without news (the decision waits 10 s; Keystone exports every 5 s)."""
    deadline = time.monotonic() + timeout
    count, trace = -1, None
    while time.monotonic() < deadline:
        trace = jaeger.trace(trace_id)
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


@pytest.mark.parametrize(("args", "route"), [COMMANDS[0], COMMANDS[2]],
                         ids=["queue create", "message post"])
def test_the_cli_trace_kept_whole_through_the_collector(
        tier: tuple[Jaeger, Collector, Stack], args: list[str], route: str) -> None:
    jaeger, _, stack = tier
    result = stack.cli(args)
    assert result.returncode == 0, result.stderr
    assert result.trace_id, result.stderr
    trace_id = uuid.UUID(result.trace_id).hex
    trace = _whole(jaeger, trace_id, route)
    spans = trace["spans"]
    service = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    # Zaqar's and Keystone's spans, one tree, nothing Jaeger would warn of.
    assert set(service.values()) == {"zaqar", KEYSTONE_SERVICE}
    assert [s["warnings"] for s in spans if s.get("warnings")] == []
    by_id = {s["spanID"]: s for s in spans}
    assert len(by_id) == len(spans)
    parent = {s["spanID"]: next((r["spanID"] for r in s["references"]
                                 if r["refType"] == "CHILD_OF"), None)
              for s in spans}
    assert all(p in by_id for p in parent.values() if p is not None)
    roots = [by_id[sid] for sid, p in parent.items() if p is None]
    assert sorted(s["operationName"] for s in roots
                  if service[s["processID"]] == KEYSTONE_SERVICE) == sorted(
        CLI_KEYSTONE_CALLS)
    zaqar_roots = [s for s in roots if service[s["processID"]] == "zaqar"]
    assert [s["operationName"] for s in zaqar_roots] == [route]
    assert _tags(zaqar_roots[0])["zaqar_otel.trace_origin"] == "osprofiler"
    # keystonemiddleware's token checks: Zaqar's CLIENT spans, Keystone's
    # SERVER span under each (exported by the other process).
    calls = [s for s in spans if _tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
    assert calls
    for call in calls:
        below = [s for s in spans if parent[s["spanID"]] == call["spanID"]]
        assert [(service[s["processID"]], _tags(s)["span.kind"])
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
        assert {_tags(s).get("zaqar_otel.trace_origin") for s in trace["spans"]
                if _tags(s)["span.kind"] == "server"
                and trace["processes"][s["processID"]]["serviceName"] == "zaqar"
                } == {"osprofiler"}
