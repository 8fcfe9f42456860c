"""Jaeger v2, the project's collector (otelcol-zaqar) and Prometheus as real
processes.

Jaeger and the collector are Go binaries that ``make backends`` builds once
into ``.cache/bin`` (collector/build.mk). Without them a test is skipped,
saying which make target builds them; with $CI set it fails
(:func:`harness.servers.unavailable`).

Each server listens on 127.0.0.1 only, on free ports, keeps its files in a
temp dir and is stopped by its pid (:class:`ServerProcess`). Jaeger keeps
traces in memory; the tests read its query API, what the Jaeger UI renders:
``/api/traces/{id}`` (with each span's ``warnings``) and
``/api/v3/traces/{id}``. The collector runs the shipped
``config/otel-collector.yaml`` unchanged, its addresses set through the
``OTELCOL_*`` variables the file reads; a :class:`Gateway` runs the
scale-out tier's ``config/otel-collector-gateway.yaml``, a
:class:`BadgerJaeger` the shipped Badger configuration. The scale-out tier
built of them, and its traffic, are :mod:`harness.scale_out`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.servers import REPO, binary, unavailable
from zaqar_otel.demo.processes import HOST, ServerProcess, call, free_port

__all__ = [
    "BADGER_CONFIG",
    "COLLECTOR_CONFIG",
    "GATEWAY_CONFIG",
    "BadgerJaeger",
    "Collector",
    "Gateway",
    "Jaeger",
    "Prometheus",
    "counter",
    "distinct_ports",
    "metric_values",
]

COLLECTOR_CONFIG = REPO / "config" / "otel-collector.yaml"
GATEWAY_CONFIG = REPO / "config" / "otel-collector-gateway.yaml"
BADGER_CONFIG = REPO / "collector" / "jaeger" / "config-badger.yaml"
PROMETHEUS_CONFIG = REPO / "collector" / "prometheus.yml"


def _get(port: int, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    status, _, payload = call(port, "GET", path, timeout=timeout)
    return status, payload


def _poll(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """``check()``'s first truthy value, polled every 0.2 s up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not there after {timeout:.0f}s")
        time.sleep(0.2)


class Jaeger(ServerProcess):
    """Jaeger v2 (``.cache/bin/jaeger``) with in-memory storage.

    ``port`` is the query API and UI; ``otlp_grpc`` / ``otlp_http`` its OTLP
    receivers (``host:port``, ``http://host:port``).
    """

    name = "jaeger"
    log_name = "jaeger.log"
    start_timeout = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.grpc_port, self.http_port = free_port(), free_port()
        self.query_grpc_port = free_port()
        self.executable = binary("jaeger", "jaeger")

    @property
    def url(self) -> str:
        """The UI's base URL (what ``--jaeger-url`` takes)."""
        return f"http://{HOST}:{self.port}"

    @property
    def otlp_grpc(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def otlp_http(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def _prepare(self) -> None:
        # Jaeger's all-in-one configuration, less the receivers and
        # extensions nothing here uses, on loopback ports.
        (self.dir / "config.yaml").write_text(f"""\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {HOST}:{self.port}
    grpc:
      endpoint: {HOST}:{self.query_grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {self.otlp_grpc}
      http:
        endpoint: {HOST}:{self.http_port}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
""")

    def _argv(self) -> list[str]:
        return [self.executable, "--config", str(self.dir / "config.yaml")]

    def _ping(self) -> None:
        status, _ = _get(self.port, "/api/services", timeout=2)
        if status != 200:
            raise RuntimeError(f"/api/services answered {status}")

    # -- the query API ------------------------------------------------------

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """``/api/traces/{id}``: the trace as the UI gets it, None if unknown."""
        status, body = _get(self.port, f"/api/traces/{trace_id}")
        if status == 404:
            return None
        assert status == 200, (status, body)
        traces = body["data"]
        assert len(traces) == 1, body
        trace: dict[str, Any] = traces[0]
        return trace

    def trace_v3(self, trace_id: str) -> list[dict[str, Any]]:
        """``/api/v3/traces/{id}``: OTLP JSON spans (with their resource's
        attributes under ``"resource"``, their scope under ``"scope"``), []
        if unknown."""
        status, body = _get(self.port, f"/api/v3/traces/{trace_id}")
        if status == 404:
            return []
        assert status == 200, (status, body)
        spans = []
        for rs in body["result"]["resourceSpans"]:
            resource = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                spans += [{**span, "resource": resource, "scope": ss.get("scope", {})}
                          for span in ss["spans"]]
        return spans

    def wait_trace(self, trace_id: str, spans: int = 1,
                   timeout: float = 30.0) -> dict[str, Any]:
        """The trace once it holds at least ``spans`` spans."""
        def found() -> dict[str, Any] | None:
            trace = self.trace(trace_id)
            return trace if trace and len(trace["spans"]) >= spans else None
        result: dict[str, Any] = _poll(f"trace {trace_id} in Jaeger", found, timeout)
        return result

    def trace_ids(self, service: str, limit: int = 2000) -> set[str]:
        """Ids of the traces Jaeger holds for ``service`` (the UI's search)."""
        query = urllib.parse.urlencode(
            {"service": service, "limit": limit, "lookback": "1h"})
        status, body = _get(self.port, f"/api/traces?{query}", timeout=60)
        assert status == 200, (status, body)
        return {t["traceID"] for t in body["data"]}


class BadgerJaeger(Jaeger):
    """Jaeger v2 running the shipped ``collector/jaeger/config-badger.yaml``
    (Badger on a local disk, in this server's temp dir: kept across
    ``stop()`` / ``start()``)."""

    name = "jaeger-badger"

    def _prepare(self) -> None:
        (self.dir / "badger").mkdir(exist_ok=True)

    def _argv(self) -> list[str]:
        return [self.executable, "--config", str(BADGER_CONFIG)]

    def _env(self) -> dict[str, str]:
        return {**os.environ,
                "JAEGER_BADGER_DIR": str(self.dir / "badger"),
                "JAEGER_QUERY_HTTP_ENDPOINT": f"{HOST}:{self.port}",
                "JAEGER_QUERY_GRPC_ENDPOINT": f"{HOST}:{self.query_grpc_port}",
                "JAEGER_OTLP_GRPC_ENDPOINT": self.otlp_grpc,
                "JAEGER_OTLP_HTTP_ENDPOINT": f"{HOST}:{self.http_port}"}


class Collector(ServerProcess):
    """otelcol-zaqar (``.cache/bin/otelcol-zaqar``) running the shipped
    ``config/otel-collector.yaml``, exporting to ``jaeger`` (host:port of an
    OTLP gRPC receiver).

    ``port`` is the OTLP/HTTP receiver (``otlp_http``), ``grpc_port`` the
    OTLP/gRPC one; ``telemetry()`` reads the collector's own metrics.
    """

    name = "otelcol"
    log_name = "otelcol.log"
    start_timeout = 60.0
    # SIGTERM: the collector flushes what its exporters hold.
    close_grace: float | None = None
    stop_timeout = 15.0

    def __init__(self, jaeger: str, decision_wait: str | None = None,
                 config: Path = COLLECTOR_CONFIG,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.jaeger = jaeger
        self.decision_wait = decision_wait
        self.config = config
        self.extra_env = dict(env or {})
        self.grpc_port, self.health_port = free_port(), free_port()
        self.prometheus_port, self.telemetry_port = free_port(), free_port()
        self.zpages_port = free_port()
        self.executable = binary("otelcol-zaqar", "collector")

    @property
    def otlp_http(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def otlp_grpc(self) -> str:
        return f"http://{HOST}:{self.grpc_port}"

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"{HOST}:{self.grpc_port}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"{HOST}:{self.port}",
            "OTELCOL_JAEGER_ENDPOINT": self.jaeger,
            "OTELCOL_PROMETHEUS_ENDPOINT": f"{HOST}:{self.prometheus_port}",
            "OTELCOL_HEALTH_ENDPOINT": f"{HOST}:{self.health_port}",
            "OTELCOL_ZPAGES_ENDPOINT": f"{HOST}:{self.zpages_port}",
            "OTELCOL_TELEMETRY_HOST": HOST,
            "OTELCOL_TELEMETRY_PORT": str(self.telemetry_port),
            **self.extra_env,
        }
        if self.decision_wait:
            env["OTELCOL_DECISION_WAIT"] = self.decision_wait
        return env

    def _argv(self) -> list[str]:
        return [self.executable, f"--config={self.config}"]

    def _ping(self) -> None:
        status, _ = _get(self.health_port, "/", timeout=2)
        if status != 200:
            raise RuntimeError(f"health_check answered {status}")

    def telemetry(self) -> str:
        """The collector's own metrics (Prometheus text)."""
        status, body = _get(self.telemetry_port, "/metrics")
        assert status == 200, (status, body)
        return str(body)

    def scrape(self) -> str:
        """What the prometheus exporter serves (Zaqar's metrics)."""
        status, body = _get(self.prometheus_port, "/metrics")
        assert status == 200, (status, body)
        return str(body)


class Gateway(Collector):
    """otelcol-zaqar running ``config/otel-collector-gateway.yaml``,
    routing to ``samplers`` (``host:port`` of their OTLP gRPC receivers)."""

    name = "otelcol-gateway"

    def __init__(self, samplers: Sequence[str],
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__("unused:4317", config=GATEWAY_CONFIG, env={
            "OTELCOL_SAMPLERS": "[" + ", ".join(samplers) + "]", **(env or {})})


_PORTS = ("port", "grpc_port", "http_port", "query_grpc_port", "health_port",
          "prometheus_port", "telemetry_port", "zpages_port")


def distinct_ports(*servers: object) -> None:
    """Give each of ``servers``' ports that another one (or the same server)
    already has a new free port: ``free_port()`` may hand out the same port
    twice when asked many times in a row."""
    used: set[int] = set()
    for server in servers:
        for attr in _PORTS:
            port = getattr(server, attr, None)
            if port is None:
                continue
            while port in used:
                port = free_port()
            setattr(server, attr, port)
            used.add(port)


class Prometheus(ServerProcess):
    """Debian's ``prometheus`` (tools/services.sh installs it) with exemplar
    storage on, running ``collector/prometheus.yml`` with its scrape target
    set to ``target`` (host:port) and its interval to ``interval``."""

    name = "prometheus"
    log_name = "prometheus.log"
    start_timeout = 60.0

    def __init__(self, target: str, interval: str = "1s") -> None:
        super().__init__()
        self.target, self.interval = target, interval
        found = shutil.which("prometheus")
        if found is None:
            unavailable("prometheus is not installed: tools/services.sh "
                         "installs Debian's package")
        self.executable = str(found)

    def _prepare(self) -> None:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"]["scrape_interval"] = self.interval
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = [self.target]
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def _argv(self) -> list[str]:
        return [self.executable,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--enable-feature=exemplar-storage"]

    def _ping(self) -> None:
        status, _ = _get(self.port, "/-/ready", timeout=2)
        if status != 200:
            raise RuntimeError(f"/-/ready answered {status}")

    def api(self, path: str, **params: Any) -> Any:
        """``/api/v1/<path>``'s ``data``."""
        query = urllib.parse.urlencode(params)
        status, body = _get(self.port, f"/api/v1/{path}?{query}")
        assert status == 200 and body["status"] == "success", (status, body)
        return body["data"]


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_values(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of counter or gauge ``name`` in Prometheus text (with or
    without the ``_total`` suffix of a counter): (labels, value)."""
    found = []
    for metric, labels, value in _SAMPLE.findall(text):
        if metric in (name, f"{name}_total"):
            found.append((dict(_LABEL.findall(labels or "")), float(value)))
    return found


def counter(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for found, v in metric_values(text, name)
               if all(found.get(k) == want for k, want in labels.items()))
