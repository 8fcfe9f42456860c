"""Zaqar's metrics in a real Prometheus, through the collector as shipped.

zaqar-otel-server exports metrics (every 6 s here) and spans to
otelcol-zaqar running ``config/otel-collector.yaml``; Debian's prometheus
(exemplar storage on) scrapes the collector's prometheus exporter as
``collector/prometheus.yml`` says (its target and interval set for the
test: 1 s); traces go on to Jaeger. The series are there under the names
the README documents (the HTTP duration under both its stable name and the
old one of the default mode), with the counts of what was sent, and the
exemplars on every duration histogram (HTTP, messaging operation, wait) name
spans of traces that Jaeger holds.

A cumulative point carries the exemplars of its own export interval only,
and the collector's prometheus exporter serves each series' latest point: so
the export interval must be longer than the collector's ``batch/metrics``
timeout (5 s; two exports in one batch keep the second, without exemplars)
and than the scrape interval (an export replaced before a scrape loses its
exemplars), as in the shipped files (60 s, 5 s, 30 s).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from harness.backends import Collector, Jaeger, Prometheus
from harness.servers import REPO, unavailable
from zaqar_otel.demo.client import producer_consumer_session, profiled, zaqar_client
from zaqar_otel.demo.processes import HOST, RedisServer
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = [pytest.mark.functional, pytest.mark.backends]

KEY = "prometheus-test-key"
SESSIONS, UNSIGNED = 3, 5


@dataclass
class Run:
    jaeger: Jaeger
    prometheus: Prometheus
    traced: list[str]
    started: float


def _value(prometheus: Prometheus, query: str) -> float | None:
    result = prometheus.api("query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def _wait_value(prometheus: Prometheus, query: str, want: float,
                timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := _value(prometheus, query)) != want:
        assert time.monotonic() < deadline, (
            query, got, want, prometheus.api("label/__name__/values"))
        time.sleep(0.5)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with Jaeger() as jaeger, Collector(jaeger.otlp_grpc) as collector, \
            Prometheus(f"{HOST}:{collector.prometheus_port}") as prometheus, \
            RedisServer() as redis:
        extra = {
            "profiler": {"enabled": "true", "hmac_keys": KEY,
                         "trace_wsgi_transport": "true",
                         "trace_message_store": "true", "trace_redis": "true"},
            # sample_ratio 0 (the default): signed requests only are traced,
            # every request is counted.
            "opentelemetry": {"exporter": "otlp_http",
                              "endpoint": collector.otlp_http,
                              "schedule_delay": "200", "metrics": "true",
                              "metrics_export_interval": "6000"},
        }
        started = time.time()
        # Both HTTP conventions (http/dup): the stable names the README
        # documents, and the old duration in ms, as the default mode (no
        # opt-in) exports it (the same instrument: metrics/recorder.py).
        env = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup"}
        with ZaqarServer(redis_sql(redis.url), extra=extra, env=env, command=(
                "{bin}/zaqar-otel-server", "--config-file", "{config}")) as zaqar:
            client = zaqar_client(zaqar.url)
            traced = []
            for i in range(SESSIONS):
                with profiled(KEY) as prof:  # openstack --os-profile KEY ...
                    producer_consumer_session(client, f"prom-{i}")
                    traced.append(uuid.UUID(prof.get_base_id()).hex)
            for _ in range(UNSIGNED):
                assert zaqar.request("GET", "/v2/queues")[0] == 200
            # Every request counted, in Prometheus: posted messages, and the
            # listings (a session's one, plus the unsigned ones).
            _wait_value(prometheus, "sum(messaging_client_sent_messages_total)",
                        2 * SESSIONS)
            _wait_value(prometheus, 'sum(http_server_request_duration_seconds_count'
                        '{http_route="/v2/queues"})', UNSIGNED)
            _wait_value(prometheus, 'sum(http_server_duration_milliseconds_count'
                        '{http_route="/v2/queues"})', UNSIGNED)
            yield Run(jaeger, prometheus, traced, started)


def test_the_documented_series_with_what_was_sent(run: Run) -> None:
    prometheus = run.prometheus
    # README: per route and method, messages per queue, the wait.
    for queue in (f"prom-{i}" for i in range(SESSIONS)):
        sent = _value(prometheus, "messaging_client_sent_messages_total"
                      f'{{messaging_destination_name="{queue}"}}')
        deleted = _value(prometheus, "zaqar_messaging_settled_messages_total"
                         f'{{messaging_destination_name="{queue}"}}')
        claimed = _value(prometheus, "sum(zaqar_messaging_wait_duration_seconds_count"
                         f'{{messaging_destination_name="{queue}",'
                         'messaging_operation_name="claim"})')
        assert (sent, deleted, claimed) == (2, 2, 2), queue
    for name, method in (
            ("http_server_request_duration_seconds", "http_request_method"),
            ("http_server_duration_milliseconds", "http_method")):
        series = prometheus.api("series", **{"match[]": f"{name}_bucket"})
        assert {"/v2/queues/{queue_name}", "/v2/queues/{queue_name}/messages",
                "/v2/queues/{queue_name}/claims", "/v2/queues"} <= {
            s["http_route"] for s in series}, name
        assert {s[method] for s in series} == {"PUT", "POST", "GET", "DELETE"}
    # The same requests under both names (the old one in ms).
    seconds = _value(prometheus, "sum(http_server_request_duration_seconds_count)")
    assert seconds == _value(prometheus,
                             "sum(http_server_duration_milliseconds_count)")
    posts = _value(prometheus, "sum(messaging_client_operation_duration_seconds_count"
                   '{messaging_operation_name="post"})')
    assert posts == SESSIONS
    # job / instance: the Zaqar process (service.name, service.instance.id).
    series = prometheus.api(
        "series", **{"match[]": "messaging_client_sent_messages_total"})
    assert {s["job"] for s in series} == {"zaqar"}
    assert len({s["instance"] for s in series}) == 1


# The duration histograms (the README's table), each as Prometheus names it.
HISTOGRAMS = ["http_server_request_duration_seconds",
              "http_server_duration_milliseconds",
              "messaging_client_operation_duration_seconds",
              "zaqar_messaging_wait_duration_seconds"]


@pytest.mark.parametrize("histogram", HISTOGRAMS)
def test_exemplars_resolve_to_traces_in_jaeger(run: Run, histogram: str) -> None:
    def exemplars() -> list[tuple[str, str]]:
        found = run.prometheus.api(
            "query_exemplars", query=f"{histogram}_bucket",
            start=f"{run.started:.3f}", end=f"{time.time() + 1:.3f}")
        return [(e["labels"]["trace_id"], e["labels"]["span_id"])
                for series in found for e in series["exemplars"]]

    # The export after the requests, then a scrape: bounded.
    deadline = time.monotonic() + 30
    while not (found := exemplars()) and time.monotonic() < deadline:
        time.sleep(0.5)
    # Only signed requests are traced (sample_ratio 0): each exemplar is one
    # of their traces, which the "requested" policy keeps.
    traces = {trace_id for trace_id, _ in found}
    assert traces and traces <= set(run.traced), (traces, run.traced)
    spans: dict[tuple[str, str], str] = {}
    for trace_id in traces:
        trace = run.jaeger.wait_trace(trace_id, timeout=60)
        assert {p["serviceName"] for p in trace["processes"].values()} == {"zaqar"}
        spans |= {(trace_id, s["spanID"]): s["operationName"] for s in trace["spans"]}
    # Each exemplar names a span of its trace, the request's or operation's.
    assert all(e in spans for e in found), (found, spans)
    names = sorted({spans[e].split(" ")[0] for e in found})
    print(f"\n{histogram}: {len(found)} exemplars, {len(traces)} traces, "
          f"each span in Jaeger ({', '.join(names)})")


def test_the_compose_files_pin_the_prometheus_run_here() -> None:
    """collector/compose*.yaml's prom/prometheus image is the release these
    tests ran (Debian's package: its version without the +ds suffix)."""
    found = shutil.which("prometheus")
    if found is None:
        unavailable("prometheus is not installed: tools/services.sh installs "
                    "Debian's package")
    proc = subprocess.run([str(found), "--version"], capture_output=True,
                          text=True, timeout=30, check=False)
    version = re.search(r"version (\d+\.\d+\.\d+)", proc.stdout + proc.stderr)
    assert version, proc.stdout + proc.stderr
    tags = {}
    for path in sorted((REPO / "collector").glob("compose*.yaml")):
        services = yaml.safe_load(path.read_text()).get("services") or {}
        for name, service in services.items():
            image, _, tag = str(service.get("image", "")).rpartition(":")
            if image == "prom/prometheus":
                tags[f"{path.name} {name}"] = tag
    assert tags and set(tags.values()) == {f"v{version.group(1)}"}, tags
