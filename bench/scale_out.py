"""The scale-out collector tier under load, faults and for its capacity.

Not part of ``make test`` (tests/functional/test_scale_out.py is the short
run); ``make scale-out`` runs every part, or one:

    python -m bench.scale_out load [--traces 3000]  # a few thousand traces
    python -m bench.scale_out control   # the same without gateways
    python -m bench.scale_out faults    # a sampler, a gateway killed; Jaeger stopped
    python -m bench.scale_out capacity  # spans per CPU-second, memory per trace

Every process runs on 127.0.0.1 (tests/scale_out_support.py); every run is
bounded in requests and time. Results print as JSON, one object per part.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.scale_out_support import (
    ClientService,
    Tier,
    analyse,
    latency,
    plan,
    run_traffic,
    tier,
    warm_up,
    zaqar_pair,
)
from zaqar_otel.demo.processes import RedisServer


def _report(name: str, result: dict[str, Any]) -> None:
    print(json.dumps({"part": name, **result}, indent=1, sort_keys=True), flush=True)


def _tier_counts(t: Tier, before: Any, after: Any) -> dict[str, Any]:
    d = after.minus(before)
    keys = ("accepted", "sent", "refused", "send_failed", "enqueue_failed",
            "memory_refused")
    return {
        "gateways": {k: d.gateway.get(k, 0) for k in keys},
        "samplers": {k: d.sampler.get(k, 0) for k in (*keys, "new_traces",
                                                       "decided", "late_spans")},
        "traces_per_sampler": [s.get("new_traces", 0) for s in d.per_sampler],
        "policies": {f"{p}/{v}": n for (p, v), n in sorted(d.policies.items())},
    }


def load(traces: int, threads: int, decision_wait: str | None) -> dict[str, Any]:
    started = time.monotonic()
    with tier(decision_wait=decision_wait) as t, RedisServer() as redis, \
            zaqar_pair(redis, t.gateways) as zaqars:
        warm_up(zaqars)
        before = t.wait_quiet(timeout=120)
        client = ClientService(t.gateways)
        t0 = time.monotonic()
        try:
            sent = run_traffic(client, zaqars, plan(traces, slow=max(6, traces // 100)),
                               threads=threads, timeout=900)
        finally:
            client.shutdown()
        took = time.monotonic() - t0
        for zaqar in zaqars:
            zaqar.stop()
        after = t.wait_quiet(timeout=120)
        dropped_lines = sum(z.log_text().count("dropping spans") for z in zaqars)
        return {"traces": traces, "seconds_sending": round(took, 1),
                "requests_per_s": round(traces / took, 1),
                "client_spans": {"exported": client.exported, "failed": client.failed},
                "zaqar_dropping_lines": dropped_lines,
                **analyse(t.jaeger, sent), **_tier_counts(t, before, after),
                "samplers_sent_total": after.sampler["sent"],
                "latency": latency(sent), "took_s": round(time.monotonic() - started)}


def control(traces: int) -> dict[str, Any]:
    """No gateways: Zaqar process i and the client's span of its requests go
    straight to different samplers, as behind a round-robin balancer."""
    with tier(gateways=0) as t, RedisServer() as redis, \
            zaqar_pair(redis, t.samplers) as zaqars:
        warm_up(zaqars)
        client = ClientService(t.samplers)
        try:
            sent = run_traffic(client, zaqars, plan(traces, slow=3), threads=6)
        finally:
            client.shutdown()
        for zaqar in zaqars:
            zaqar.stop()
        t.wait_quiet(timeout=120)
        return {"traces": traces, **analyse(t.jaeger, sent)}


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "load": lambda a: load(a.traces, a.threads, a.decision_wait),
    "control": lambda a: control(min(a.traces, 300)),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out")
    parser.add_argument("parts", nargs="*", choices=list(PARTS),
                        help="what to run (default: all)")
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--decision-wait", default=None,
                        help="the samplers' decision_wait (default: the shipped 10s)")
    args = parser.parse_args(argv)
    print(f"# scale-out tier: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
    for name in args.parts or list(PARTS):
        _report(name, PARTS[name](args))


if __name__ == "__main__":
    main()
