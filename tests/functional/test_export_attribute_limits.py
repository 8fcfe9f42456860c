"""Oversized request attributes against the export's limits
(``export/processor.py``, ``_sdk/fast/processor.py``, ``_sdk/fast/otlp_http.py``,
``_sdk/fast/otlp_grpc.py``, ``entry/http_attributes.py``), against a real
``zaqar-otel-server``.

A 60 KB ``User-Agent`` (or a 3 MB websocket action) beside signed requests,
exported to a receiver that refuses requests over 4 MiB (gRPC's default
receive limit): every signed request's server span arrives, no exported
value is longer than the length limit, and memory against a collector that
never answers stays bounded. Numbers are printed (``-s`` shows them), not
asserted on speed. (Issue 24, item 1; docs/faults.md.)
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from harness import websocket
from harness.clients import signed
from harness.faults import Relay
from harness.probe import rss_kib
from harness.tracing import OTEL_SERVER, arrived, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional

COLLECTOR_LIMIT = 4 << 20  # gRPC's default receive limit, a collector's usual cap
BIG = 60_000  # characters of an oversized User-Agent (the WSGI line limit is 64 KiB)
LENGTH_LIMIT = 8192  # the default attribute_value_length_limit
QUEUE = "limits"
STATS = f"/v2/queues/{QUEUE}/stats"


def oversized() -> dict[str, str]:
    """A User-Agent of BIG characters, different for each request."""
    return {"User-Agent": uuid.uuid4().hex + "x" * (BIG - 32)}


def attack(server: ZaqarServer, big: int, signed_count: int,
           clients: int = 4, seed: int = 24) -> list[int]:
    """``big`` oversized and ``signed_count`` signed GETs of the queue's
    stats, shuffled, from ``clients`` threads; the signed trace ids."""
    jobs = ["big"] * big + ["signed"] * signed_count
    random.Random(seed).shuffle(jobs)
    trace_ids: list[int] = []
    errors: list[BaseException] = []

    def client(mine: list[str]) -> None:
        try:
            for job in mine:
                if job == "signed":
                    headers, trace_id = signed()
                    trace_ids.append(trace_id)
                else:
                    headers = oversized()
                assert server.request("GET", STATS, headers=headers)[0] == 200
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(jobs[i::clients],))
               for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors[0]
    return trace_ids


def longest_value(spans: list[ReceivedSpan]) -> int:
    return max((len(v) for s in spans for v in s.attributes.values()
                if isinstance(v, str)), default=0)


# "split": an operator's limits let requests grow past the collector's:
# the refused ones are split and sent again. The queue's bounds are raised
# with the batch's (the 440 requests make 2,209 spans, 26 MB): what this
# case is about is the split, and a span the queue drops under a slow
# export would be a drop line of the queue's, not of the split's.
SPLIT = {"attribute_value_length_limit": str(BIG),
         "max_export_batch_bytes": str(64 << 20),
         "max_queue_bytes": str(64 << 20), "max_queue_size": "4096"}


def drop_lines(log: str) -> list[str]:
    """The server's "dropping spans" lines: each says why (a full queue, in
    spans or bytes; a request the collector did not accept, and its code)."""
    return [line.split("zaqar-otel: ", 1)[1] for line in log.splitlines()
            if "zaqar-otel: dropping spans" in line]


@pytest.mark.parametrize("limits", ["defaults", "split"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_oversized_user_agents_lose_no_signed_span(
    protocol: str, limits: str, redis: RedisServer,
) -> None:
    """400 requests with a 60 KB User-Agent beside 40 signed ones, every
    request traced (sample_ratio 1.0), exported to a receiver that refuses
    requests over 4 MiB: all 40 signed server spans arrive (before: 4 of 40
    over OTLP/HTTP). With the defaults no value is longer than the length
    limit and no request reaches the receiver's; with limits that let them
    (``SPLIT``), the requests it refuses are split and sent again."""
    with OTLPReceiver(protocol,  # type: ignore[arg-type]
                      max_request_bytes=COLLECTOR_LIMIT) as receiver:
        otel = {"sample_ratio": "1.0", "schedule_delay": "2000",
                "exporter": f"otlp_{protocol}",
                **(SPLIT if limits == "split" else {})}
        if protocol == "grpc":
            otel["insecure"] = "true"
        if limits == "split":
            # Splitting a refused request is the fast path's exporters'
            # (the SDK's own drop the batch): whatever OTEL_ZAQAR_FAST_PATH says.
            otel["fast_path"] = "auto"
        with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                         extra=tracing(receiver, otel=otel)) as server:
            if limits == "split":
                assert "spans take the fast (" in server.log_text()
            assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
            trace_ids = attack(server, big=400, signed_count=40)
            got = arrived(receiver, trace_ids)
            log = server.log_text()
        spans = receiver.spans()
    drops = drop_lines(log)
    splits = [line for line in log.splitlines() if "taken as too large" in line]
    print(f"\n{protocol}, {limits}: {len({s.trace_id for s in got})} of "
          f"{len(trace_ids)} "
          f"signed server spans arrived; {len(spans)} spans in "
          f"{receiver.requests} requests, {receiver.refused} refused as too "
          f"large (HTTP); longest exported value {longest_value(spans)} "
          f"characters; largest request {max(map(len, receiver.raw), default=0)} "
          f"bytes; split lines {splits}; drop lines {drops}")
    assert len({s.trace_id for s in got}) == len(trace_ids), drops
    assert not drops  # every span of every request: none dropped, for any reason
    if limits == "defaults":
        assert longest_value(spans) <= LENGTH_LIMIT
        assert max(map(len, receiver.raw)) <= COLLECTOR_LIMIT
        assert not splits
    else:
        # The case this runs: refused, then split. gRPC refuses in its core,
        # where the receiver counts nothing: the exporter's line says it.
        code = "HTTP 413" if protocol == "http" else "gRPC RESOURCE_EXHAUSTED"
        assert len(splits) == 1 and code in splits[0], splits
        if protocol == "http":
            assert receiver.refused > 0
    assert "Traceback" not in log
    assert "exceeds max length" not in log  # the SDK's line per cut value


# Every trace_* switch but the server span's off: one span a request.
SERVER_SPANS_ONLY = {name: "false" for name in (
    "trace_message_store", "trace_management_store", "trace_redis",
    "trace_mongodb", "trace_sqlalchemy", "trace_pooling")}


def test_megabyte_websocket_actions_lose_no_signed_span() -> None:
    """20 websocket requests whose action is 3 MB of text (Zaqar answers
    400) beside 40 signed ones, every request traced, to a receiver that
    refuses requests over 4 MiB: all 40 signed server spans arrive (before:
    0 of 40), none named or tagged with the action's text."""
    requests = [websocket.request("queue_create", {"queue_name": QUEUE})]
    trace_ids = []
    for n in range(60):
        if n % 3 == 2:
            requests.append(websocket.request("x" * (3 << 20) + str(n), {}))
        else:
            headers, trace_id = signed()
            trace_ids.append(trace_id)
            requests.append(websocket.request("queue_get_stats", {"queue_name": QUEUE},
                                       headers))
    with OTLPReceiver(max_request_bytes=COLLECTOR_LIMIT) as receiver, \
            websocket.traced_server(receiver, ratio=1.0) as server:
        responses = websocket.exchange(server.port, requests, timeout=120)
        got = arrived(receiver, trace_ids)
        spans = receiver.spans()
    statuses = [r["headers"]["status"] for r in responses]
    print(f"\nwebsocket: {len({s.trace_id for s in got})} of {len(trace_ids)} "
          f"signed server spans arrived; answers {sorted(set(statuses))}; "
          f"longest exported value {longest_value(spans)}, longest name "
          f"{max(len(s.name) for s in spans)}")
    assert statuses.count(400) == 20
    assert len({s.trace_id for s in got}) == len(trace_ids)
    assert longest_value(spans) <= LENGTH_LIMIT
    assert max(len(s.name) for s in spans) < 200


@pytest.mark.parametrize("path", ["fast", "stock"])
def test_memory_against_a_black_hole_stays_bounded(
    redis: RedisServer, receiver: OTLPReceiver, path: str,
) -> None:
    """1,500 requests with a distinct 60 KB User-Agent, every one traced,
    only the server span (so that each span is one of those): against a
    collector that accepts and never answers, the queue fills by its byte
    bound, and the server's RSS exceeds the healthy case's by at most that
    bound twice (the queue, and the batch being exported) and the 9 MiB of
    the small-span case: the 25 MiB docs/faults.md promises (before: +332
    MiB by the issue's run; after: +5.2 to +9.1 MiB fast, +8.2 to +12.4 MiB
    stock). On either path: the stock path's queue is bounded in bytes by
    its guard (the SDK's own counts spans), from an estimate of each span's
    size."""
    requests = 1500
    found: dict[str, dict[str, int]] = {}
    drops: dict[str, list[str]] = {}
    for name in ("healthy", "black hole"):
        with Relay(receiver.port, mode="forward" if name == "healthy"
                   else "blackhole") as collector:
            # Each path as named, whatever OTEL_ZAQAR_FAST_PATH says. The first
            # export to the black hole waits out the whole attack (timeout
            # 120 s), so the queue fills by its byte bound however slowly a
            # busy machine serves the requests; with 10 s, a slow run's
            # first drop was the timed-out export's, and the byte bound's
            # drop line never came (one line per outage).
            otel = {"sample_ratio": "1.0", "timeout": "120", "shutdown_timeout": "1",
                    "schedule_delay": "200", "endpoint": collector.endpoint,
                    "fast_path": "auto" if path == "fast" else "off"}
            with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                             extra=tracing(receiver, profiler=SERVER_SPANS_ONLY,
                                           otel=otel)) as server:
                assert f"spans take the {path} (" in server.log_text()
                assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
                assert server.pid is not None
                before = rss_kib(server.pid)
                attack(server, big=requests, signed_count=0)
                time.sleep(2)  # a few more failed exports, no new spans
                found[name] = {**rss_kib(server.pid),
                               "start": before["VmRSS"]}
                drops[name] = [line.split("zaqar-otel: ", 1)[1][:60]
                               for line in server.log_text().splitlines()
                               if "zaqar-otel: dropping" in line]
    excess = (found["black hole"]["VmRSS"] - found["healthy"]["VmRSS"]) / 1024
    print(f"\n{path} path: RSS KiB after {requests} oversized requests: {found}; "
          f"black hole - healthy = {excess:+.1f} MiB; drop lines {drops}")
    assert excess <= 2 * 8 + 9, found  # 2 x max_queue_bytes + 9 MiB, as documented
    assert any("(bytes)" in line for line in drops["black hole"]), drops


