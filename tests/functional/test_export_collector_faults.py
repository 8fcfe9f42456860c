"""Invariant 7: a collector that is down, hangs or comes back costs requests
nothing, floods no log, and forked workers export their own spans.

Timings are measured and printed (``-s`` or ``-rP`` shows them), never
asserted here: the ratio check with a table lives in
``tests/stress/test_fault_latency.py``.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.tracing import KEY, OTEL_SERVER, tracing
from zaqar_otel.demo.processes import RedisServer, free_port
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional


QUEUE = "faults"
STATS = f"/v2/queues/{QUEUE}/stats"
# Log lines of the SDK / OTLP exporter about a failed or retried export, and
# of the batch processor dropping spans.
EXPORT_FAILURE = re.compile(
    r"(Failed to export|Transient error|exporting|Exception while export"
    r"|Queue full|dropp|timed out|Max retries|Connection refused)", re.IGNORECASE)


def signed() -> tuple[dict[str, str], int]:
    """Fresh OSProfiler headers (a new trace) and that trace's id."""
    base_id = str(uuid.uuid4())
    return codec.encode(base_id, str(uuid.uuid4()), KEY), uuid.UUID(base_id).int


def export_failure_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if EXPORT_FAILURE.search(line) and "GET /v2" not in line]


@dataclass
class Measured:
    """One server under measurement and what its requests saw."""

    name: str
    server: ZaqarServer
    reference: tuple[int, Any] | None = None
    latencies: list[float] = field(default_factory=list)
    wrong: list[tuple[int, Any]] = field(default_factory=list)

    def prepare(self) -> None:
        assert self.server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
        status, _, body = self.server.request("GET", STATS)
        self.reference = (status, body)

    def one(self) -> None:
        headers, _ = signed()
        started = time.perf_counter()
        status, _, body = self.server.request("GET", STATS, headers=headers)
        self.latencies.append(time.perf_counter() - started)
        if (status, body) != self.reference:
            self.wrong.append((status, body))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def measure(targets: Sequence[Measured], requests: int, batch: int = 10) -> None:
    """``requests`` signed requests per target, targets alternated per batch,
    so drifts of the machine hit all of them alike."""
    for target in targets:
        target.prepare()
        for _ in range(batch):  # warm-up: connections, caches, first exports
            target.one()
        target.latencies.clear()
    for _ in range(requests // batch):
        for target in targets:
            for _ in range(batch):
                target.one()


def latency_table(targets: Sequence[Measured]) -> str:
    base = targets[0].median_ms
    lines = [f"{'collector':<10} {'requests':>8} {'median ms':>10} {'p90 ms':>8} "
             f"{'vs ' + targets[0].name:>10}"]
    for t in targets:
        p90 = statistics.quantiles(t.latencies, n=10)[-1] * 1000
        lines.append(f"{t.name:<10} {len(t.latencies):>8} {t.median_ms:>10.2f} "
                     f"{p90:>8.2f} {t.median_ms / base - 1:>+10.1%}")
    return "\n".join(lines)


@contextlib.contextmanager
def three_collectors(
    redis_url: str, otel: dict[str, str] | None = None
) -> Iterator[tuple[list[Measured], dict[str, OTLPReceiver]]]:
    """zaqar-otel-server exporting to a healthy, a hanging and a refusing
    collector (a closed port)."""
    with contextlib.ExitStack() as stack:
        healthy = stack.enter_context(OTLPReceiver())
        hanging = stack.enter_context(OTLPReceiver())
        hanging.mode = "hang"
        targets = []
        for name, rx in (("healthy", healthy), ("hanging", hanging),
                         ("refusing", None)):
            extra = tracing(healthy, otel={"shutdown_timeout": "1", **(otel or {})})
            if rx is not None:
                extra["opentelemetry"]["endpoint"] = rx.endpoint
            else:
                extra["opentelemetry"]["endpoint"] = f"http://127.0.0.1:{free_port()}"
            server = stack.enter_context(
                ZaqarServer(redis_sql(redis_url), command=OTEL_SERVER, extra=extra))
            targets.append(Measured(name, server))
        yield targets, {"healthy": healthy, "hanging": hanging}


def test_down_collector_changes_no_answer_and_floods_no_log(
    redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    requests = 100
    # A 2 s export timeout: failed exports are reported within the test.
    with three_collectors(redis.url, otel={"timeout": "2"}) as (targets, receivers):
        measure(targets, requests)
        deadline = time.monotonic() + 10
        for t in targets[1:]:
            while not export_failure_lines(t.server.log_text()):
                assert time.monotonic() < deadline, f"{t.name}: no failure logged"
                time.sleep(0.1)
        logs = {t.name: t.server.log_text() for t in targets}
        hanging_requests = receivers["hanging"].requests
        healthy_servers = [s for s in receivers["healthy"].spans()
                           if s.kind == "SERVER"]
    table = latency_table(targets)
    print(f"\nsigned GET {STATS}, {requests} per collector, batches of 10 "
          f"alternated\n{table}")
    for t in targets:
        assert len(t.latencies) == requests
        assert not t.wrong, (t.name, t.wrong[:3])
        assert "Traceback" not in logs[t.name], logs[t.name][-3000:]
        failures = export_failure_lines(logs[t.name])
        print(f"{t.name}: {len(failures)} export failure log lines")
        # Logged, but per export attempt at most, never per request or span.
        assert len(failures) <= 10, "\n".join(failures)
        assert failures or t.name == "healthy"
    assert hanging_requests >= 1  # the hanging collector was really tried
    assert len(healthy_servers) >= requests


def test_collector_back_after_errors_gets_later_spans(
    redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    # A short exporter timeout: a batch refused now is given up on quickly.
    extra = tracing(receiver, otel={"timeout": "2", "shutdown_timeout": "1"})
    receiver.mode = "error"
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
        deadline = time.monotonic() + 3.0
        refused = 0
        while time.monotonic() < deadline:
            headers, _ = signed()
            assert server.request("GET", STATS, headers=headers)[0] == 200
            refused += 1
            time.sleep(0.05)
        assert receiver.requests >= 1, "no export was even tried"
        assert receiver.spans() == []  # every export so far was answered 503
        receiver.mode = "ok"
        headers, trace_id = signed()
        assert server.request("GET", STATS, headers=headers)[0] == 200
        # Within the exporter's timeout plus its back-off, not after a restart.
        (root,) = receiver.wait_for(
            lambda s: s.trace_id == trace_id and s.kind == "SERVER", timeout=20)
        time.sleep(0.2)
        spans = [s for s in receiver.spans() if s.trace_id == trace_id]
        log = server.log_text()
    assert root.name == "GET /v2/queues/{queue_name}/stats"
    assert len(spans) > 1, render_tree(spans)  # its children came too
    assert "Traceback" not in log, log[-3000:]
    assert len(export_failure_lines(log)) < refused, log[-3000:]


GUNICORN_2X4 = ("{bin}/gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "2",
                "--threads", "4", "zaqar_otel.wsgi:application")


def _wait_for_setups(server: ZaqarServer, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.log_text().count("zaqar-otel: tracing on") < count:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)


def _concurrent_posts(server: ZaqarServer, clients: int) -> list[int]:
    """``clients`` signed posts released at once; their trace ids."""
    barrier = threading.Barrier(clients)
    trace_ids: list[int] = []
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            headers, trace_id = signed()
            barrier.wait(timeout=30)
            status, _, body = server.request(
                "POST", f"/v2/queues/{QUEUE}/messages", headers=headers,
                body={"messages": [{"body": {"n": n}, "ttl": 60}]})
            assert status == 201, body
            trace_ids.append(trace_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return trace_ids


def test_forked_workers_each_export_their_own_spans(
    redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    with ZaqarServer(redis_sql(redis.url), command=GUNICORN_2X4,
                     extra=tracing(receiver)) as server:
        _wait_for_setups(server, 2)  # both workers loaded the app
        assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
        trace_ids: list[int] = []
        for clients in (40, 80, 160):
            trace_ids += _concurrent_posts(server, clients)
            receiver.wait_for(
                lambda s, ids=frozenset(trace_ids): s.kind == "SERVER"
                and s.trace_id in ids, count=len(trace_ids), timeout=30)
            time.sleep(0.3)  # children were queued before their server span
            spans = receiver.spans()
            workers = {s.resource.get("service.instance.id") for s in spans}
            if len(workers) >= 2:
                break
        log = server.log_text()
    mine = [s for s in spans if s.trace_id in trace_ids]
    roots = {s.trace_id for s in mine if s.kind == "SERVER"}
    per_worker = Counter(s.resource.get("service.instance.id") for s in mine
                         if s.kind == "SERVER")
    print(f"\n{len(trace_ids)} concurrent requests, server spans per worker: "
          f"{sorted(per_worker.values())}")
    assert roots == set(trace_ids)  # every request's server span arrived
    assert len({s.span_id for s in spans}) == len(spans), "duplicate span ids"
    assert len(workers) == 2, f"all {len(trace_ids)} requests on one worker"
    # Each trace was exported whole by the one worker that served it.
    for trace_id in trace_ids:
        group = [s for s in mine if s.trace_id == trace_id]
        assert len({s.resource.get("service.instance.id") for s in group}) == 1
    assert "Traceback" not in log, log[-3000:]
