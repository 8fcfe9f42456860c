"""Invariant 7's "memory stays bounded" (``export/``), the long run of
tests/functional/test_export_failed_memory.py: memory against collectors
that never answer.

``ZAQAR_OTEL_MEMORY_REQUESTS`` (default 10000) signed requests to each of
four zaqar-otel-servers, alternated in batches: exporter ``none``, a
healthy collector, a black hole (accepts, never reads nor answers) and a
hanging collector (reads, never answers). RSS is sampled along the way;
at the end a probe in each server (``harness.probe.PROBE``)
counts the spans alive, those in the span queue and those outside it, and
what the cyclic GC then frees. ~550 requests/s on one client thread: 10k
per collector takes ~75 s, 100k ~12 min (docs/faults.md has both).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.clients import signed_stats
from harness.faults import Relay
from harness.probe import Probe
from harness.tracing import OTEL_SERVER, traced_extra
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

REQUESTS = int(os.environ.get("ZAQAR_OTEL_MEMORY_REQUESTS", "10000"))
BATCH = 50
# What the healthy case may not exceed by more: the span queue (2048 spans of
# ~2.8 KiB), the batch being exported (512) and its encoded body, and slack.
QUEUE_ALLOWANCE_MIB = 12.0


@dataclass
class Target:
    name: str
    server: ZaqarServer
    probe: Probe
    rss: dict[int, float] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)

    def sample(self, n: int) -> None:
        assert self.server.pid is not None
        self.rss[n] = psutil.Process(self.server.pid).memory_info().rss / 2**20


@contextlib.contextmanager
def four_collectors(redis_url: str, directory: Path) -> Iterator[list[Target]]:
    with contextlib.ExitStack() as stack:
        healthy = stack.enter_context(OTLPReceiver())
        hanging = stack.enter_context(OTLPReceiver())
        hanging.mode = "hang"
        black_hole = stack.enter_context(Relay(mode="blackhole"))
        targets = []
        for name, endpoint in (("exporter none", None), ("healthy", healthy.endpoint),
                               ("black hole", black_hole.endpoint),
                               ("hanging", hanging.endpoint)):
            extra = traced_extra(healthy, shutdown_timeout="1")
            if endpoint is None:
                extra["opentelemetry"]["exporter"] = "none"
            else:
                extra["opentelemetry"]["endpoint"] = endpoint
            probe = Probe(directory / name.replace(" ", "-"), collect=True)
            server = stack.enter_context(ZaqarServer(
                redis_sql(redis_url), command=OTEL_SERVER, extra=extra, env=probe.env))
            queue = name.replace(" ", "-")
            assert server.request("PUT", f"/v2/queues/{queue}")[0] == 201
            targets.append(Target(name, server, probe))
        yield targets


def test_memory_against_collectors_that_never_answer(
    tmp_path: Path, redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    samples = sorted({n for n in (1000, 1500, 10_000, REQUESTS // 2, REQUESTS)
                      if n <= REQUESTS})
    with four_collectors(redis.url, tmp_path) as targets:
        started = time.monotonic()
        for done in range(BATCH, REQUESTS + BATCH, BATCH):
            for target in targets:
                signed_stats(target.server, target.name.replace(" ", "-"), BATCH)
                if any(done - BATCH < n <= done for n in samples):
                    target.sample(min(n for n in samples if n > done - BATCH))
        took = time.monotonic() - started
        for target in targets:
            target.found = target.probe.read(target.server, timeout=60)
    by = {t.name: t for t in targets}
    lines = [f"{'collector':<14}" + "".join(f"{n:>9}" for n in samples)
             + "  spans: alive / queued / outside the queue"
             " / alive after gc.collect (objects freed)"]
    for t in targets:
        f = t.found
        lines.append(f"{t.name:<14}" + "".join(f"{t.rss[n]:>9.1f}" for n in samples)
                     + f"  {f['alive']} / {f['queued']} / "
                     f"{f['outside']} / {f['alive_after_collect']} "
                     f"({f['collected']})")
    growth = by["black hole"].rss[REQUESTS] - by["black hole"].rss[samples[0]]
    over = by["black hole"].rss[REQUESTS] - by["healthy"].rss[REQUESTS]
    with capsys.disabled():
        print(f"\nRSS MiB of zaqar-otel-server, {REQUESTS} signed requests per "
              f"collector, {4 * REQUESTS / took:.0f} requests/s in all")
        print("\n".join(lines))
        print(f"black hole: {growth:+.1f} MiB from {samples[0]} to {REQUESTS} "
              f"requests, {over:+.1f} MiB over the healthy collector")
    # Bounded: the queue and the batch in flight, not a growing heap, and no
    # span left for the cyclic GC (a failed export's reference cycle).
    assert growth < 10, by["black hole"].rss
    assert over < QUEUE_ALLOWANCE_MIB, (over, by["black hole"].rss)
    for t in targets:
        assert t.found["outside"] <= 512 + 64, (t.name, t.found)
        assert t.found["alive_after_collect"] == t.found["alive"], (t.name, t.found)
