"""The scale-out collector tier under load, faults and for its capacity.

Not part of ``make test`` (tests/functional/test_scale_out.py is the short
run); ``make scale-out`` runs every part, or one:

    python -m bench.scale_out load [--traces 3000]  # a few thousand traces
    python -m bench.scale_out control   # the same without gateways
    python -m bench.scale_out faults    # a sampler, a gateway killed; Jaeger stopped
    python -m bench.scale_out capacity  # spans per CPU-second, memory per trace
    python -m bench.scale_out combined  # gunicorn workers + Keystone, CLI + load

Every process runs on 127.0.0.1 (harness/scale_out.py); every run is
bounded in requests and time. Results print as JSON, one object per part.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.receivers import BackendReceiver
from harness.scale_out import (
    FAULTS,
    ClientService,
    Tier,
    analyse,
    expected_kept,
    fault_rows,
    latency,
    pipeline_empty,
    plan,
    run_fault,
    run_traffic,
    tier,
    warm_up,
    zaqar_dropped,
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


# -- the combined topology --------------------------------------------------------

# keystonemiddleware's token cache, seconds (its default: 300): each worker
# validates the token with Keystone again every TOKEN_CACHE_S s, in the trace
# of the call that does; Keystone's one sync worker serves every validation.
TOKEN_CACHE_S = 1


def combined(args: argparse.Namespace) -> dict[str, Any]:
    """2 Zaqar workers (gunicorn, zaqar_otel.wsgi:application) exporting to
    gateway 1 and 2, Keystone (osprofiler's OTLP driver) to gateway 2, the
    client service through each gateway in turn; real ``openstack
    --os-profile`` commands, then the mixed load (every call with the demo
    user's token, keystonemiddleware's token cache shortened to
    ``TOKEN_CACHE_S``: the calls that validate it have Keystone's spans in
    their trace), 2 Zaqar calls per trace."""
    import tempfile
    import uuid as uuid_module

    from harness.keystone_stack import (
        COMMANDS,
        Stack,
        combined_shape,
        require_stack,
        whole_in_jaeger,
    )
    from harness.scale_out import gunicorn_workers
    from harness.tracing import KEY as tracing_key

    require_stack()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="zaqar-otel-combined-"))
    with tier(decision_wait=args.decision_wait) as t:
        command, env = gunicorn_workers(workdir, t.gateways)
        with Stack(receiver=BackendReceiver(t.gateways[0]),
                   keystone_receiver=BackendReceiver(t.gateways[1]),
                   zaqar_command=command, zaqar_env=env,
                   otel={"endpoint": None, "schedule_delay": "200",
                         "sample_ratio": "1.0"},
                   authtoken={"token_cache_time": str(TOKEN_CACHE_S)}) as stack:
            cli = []
            for cli_args, route in COMMANDS:
                result = stack.cli(cli_args)
                assert result.returncode == 0, result.stderr
                assert result.trace_id, result.stderr
                cli.append((uuid_module.UUID(result.trace_id).hex, route))
            auth = {"X-Auth-Token": stack.keystone.token(stack.user)}
            warm_up([stack.zaqar], auth, rounds=4)
            before = t.wait_quiet(timeout=180)
            client = ClientService(t.gateways, key=tracing_key)
            kinds = plan(args.traces, slow=max(6, args.traces // 100))
            t0 = time.monotonic()
            try:
                sent = run_traffic(client, [stack.zaqar], kinds, threads=args.threads,
                                   timeout=900, auth=auth, calls=2)
            finally:
                client.shutdown()
            took = time.monotonic() - t0
            after = t.wait_quiet(timeout=180)
            cli_shapes = []
            for trace_id, route in cli:
                trace = whole_in_jaeger(t.jaeger, trace_id, route)
                cli_shapes.append({
                    "route": route, "spans": len(trace["spans"]),
                    "services": sorted({p["serviceName"]
                                        for p in trace["processes"].values()})})
            rows: dict[str, dict[str, int]] = {}
            wrong = 0
            for s in sent:
                trace = t.jaeger.trace(s.trace_id)
                row = rows.setdefault(s.kind, dict.fromkeys(
                    ("sent", "kept", "whole", "partial", "both_workers",
                     "with_keystone", "keystone_and_both_workers"), 0))
                row["sent"] += 1
                expected = expected_kept(s)
                if expected is not None and expected != (trace is not None):
                    wrong += 1
                if trace is None:
                    continue
                shape = combined_shape(trace)
                row["kept"] += 1
                row["whole" if shape["whole"] else "partial"] += 1
                row["both_workers"] += shape["workers"] == 2
                row["with_keystone"] += shape["keystone_spans"] > 0
                row["keystone_and_both_workers"] += (shape["keystone_spans"] > 0
                                                     and shape["workers"] == 2)
            statuses = collections.Counter(f"{s.kind} {s.status}" for s in sent)
            return {
                "traces": len(sent), "seconds_sending": round(took, 1),
                "requests_per_s": round(2 * len(sent) / took, 1),
                "cli": cli_shapes, "rows": rows, "wrong_decisions": wrong,
                "partial": sum(r["partial"] for r in rows.values()),
                "statuses": dict(statuses),
                "client_spans": {"exported": client.exported, "failed": client.failed},
                "zaqar_dropped": zaqar_dropped(stack.zaqar.log_text()),
                **_tier_counts(t, before, after),
                "dropped_too_early": after.minus(before).sampler["dropped_too_early"],
                "latency": latency(sent),
                "took_s": round(time.monotonic() - started)}


# -- faults ---------------------------------------------------------------------

RATE = 30.0        # requests per second, paced
LEAD = 12.0        # seconds of traffic before the fault
TAIL = 12.0        # seconds of traffic after the recovery
DOWN = {"sampler": 10.0, "gateway": 10.0, "jaeger": 30.0, "jaeger-pause": 30.0}


def _settle(t: Tier, timeout: float = 240.0) -> None:
    """The samplers' pipelines are empty and what they accepted has not
    moved for 12 s (the gateways' retries back off up to 10 s)."""
    deadline = time.monotonic() + timeout
    last, still = -1.0, 0.0
    while time.monotonic() < deadline:
        accepted = t.counts().sampler.get("accepted", 0)
        if pipeline_empty(t) and accepted == last:
            still += 1.0
            if still >= 12:
                return
        else:
            still = 0.0
        last = accepted
        time.sleep(1.0)


def fault(name: str, down: float, decision_wait: str | None) -> dict[str, Any]:
    """``name`` (harness.scale_out.FAULTS) for ``down`` seconds mid-run."""
    with tier(decision_wait=decision_wait) as t, RedisServer() as redis, \
            zaqar_pair(redis, t.gateways) as zaqars:
        warm_up(zaqars)
        t.wait_quiet(timeout=120)
        run = run_fault(t, zaqars, name, down, RATE, LEAD, TAIL)
        for zaqar in zaqars:
            zaqar.stop()
        _settle(t)
        gateway_log = "\n".join(g.log_text() for g in t.gateways)
        sampler_log = "\n".join(g.log_text() for g in t.samplers)
        return {
            "fault": name, "down_s": down, "requests": len(run.sent),
            "phases": fault_rows(t.jaeger, run),
            "client_spans": {"exported": run.client_exported,
                             "failed": run.client_failed},
            "zaqar_dropped_spans": [zaqar_dropped(z.log_text()) for z in zaqars],
            "samplers_send_failed": t.counts().sampler.get("send_failed", 0),
            "gateway_log_errors": gateway_log.count("\terror\t"),
            "sampler_log_errors": sampler_log.count("\terror\t"),
            "gateway_log_dropping": gateway_log.count("Dropping data"),
            "sampler_log_dropping": sampler_log.count("Dropping data"),
        }


def faults(args: argparse.Namespace) -> dict[str, Any]:
    chosen = args.fault or ["sampler", "gateway", "jaeger"]
    return {name: fault(name, DOWN[name], args.decision_wait) for name in chosen}


# -- capacity -------------------------------------------------------------------

SPANS_PER_TRACE = 9  # a client span and a Zaqar post's 8, as in the runs above
TRACES_PER_REQUEST = 50


def _template(spans_per_trace: int, traces: int) -> tuple[bytes, list[list[int]]]:
    """An OTLP/HTTP export request of ``traces`` traces of spans like a Zaqar
    post's (kinds, names, a dozen attributes), and the offsets of each
    trace's 16 id bytes in it, to stamp new ids into."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    def attrs(**values: Any) -> list[Any]:
        out = []
        for k, v in values.items():
            value = (common_pb2.AnyValue(int_value=v) if isinstance(v, int)
                     else common_pb2.AnyValue(string_value=str(v)))
            out.append(common_pb2.KeyValue(key=k, value=value))
        return out

    now = time.time_ns()
    marks = [bytes([0xA5, 0x5A, t >> 8, t & 0xFF]) + b"\x11" * 12
             for t in range(traces)]
    server, client = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
    spans = []
    for t, trace_id in enumerate(marks):
        root = bytes([t >> 8, t & 0xFF, 0]) + b"\x22" * 5
        for n in range(spans_per_trace):
            spans.append(trace_pb2.Span(
                trace_id=trace_id, span_id=bytes([t >> 8, t & 0xFF, n]) + b"\x22" * 5,
                parent_span_id=b"" if n == 0 else root,
                name=("POST /v2/queues/{queue_name}/messages" if n < 2
                      else f"redis EVALSHA {n}"),
                kind=server if n == 1 else client,
                start_time_unix_nano=now + n * 1000, end_time_unix_nano=now + 5_000_000,
                attributes=attrs(**{
                    "http.request.method": "POST", "url.path": "/v2/queues/q/messages",
                    "http.route": "/v2/queues/{queue_name}/messages",
                    "http.response.status_code": 201, "server.address": "127.0.0.1",
                    "server.port": 8888, "network.protocol.version": "1.1",
                    "db.system.name": "redis", "db.operation.name": "EVALSHA",
                    "messaging.destination.name": "orders",
                    "zaqar_otel.trace_origin": "sample_ratio",
                    "user_agent.original": "python-zaqarclient"})))
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[
        trace_pb2.ResourceSpans(
            resource=resource_pb2.Resource(attributes=attrs(**{
                "service.name": "zaqar", "service.instance.id": "capacity"})),
            scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])
    body = request.SerializeToString()
    offsets = []
    for mark in marks:
        found, at = [], body.find(mark)
        while at >= 0:
            found.append(at)
            at = body.find(mark, at + 1)
        assert len(found) == spans_per_trace, (len(found), spans_per_trace)
        offsets.append(found)
    return body, offsets


def _proc(pid: int) -> tuple[float, int]:
    """CPU seconds and RSS bytes of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def _offer(port: int, rate: float, seconds: float, spans_per_trace: int,
           on_tick: Callable[[], None],
           traces_per_request: int = TRACES_PER_REQUEST) -> int:
    """OTLP/HTTP requests at ``rate`` spans/s to 127.0.0.1:``port`` for
    ``seconds``, every trace a new id; spans sent."""
    import http.client
    body, offsets = _template(spans_per_trace, traces_per_request)
    per_request = spans_per_trace * traces_per_request
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent, t0, tick = 0, time.monotonic(), time.monotonic()
    try:
        while (now := time.monotonic()) - t0 < seconds:
            due = (now - t0) * rate
            if sent >= due:
                time.sleep(min(0.01, (sent - due) / rate))
                continue
            data = bytearray(body)
            for spans in offsets:
                new_id = os.urandom(16)
                for at in spans:
                    data[at:at + 16] = new_id
            conn.request("POST", "/v1/traces", body=bytes(data),
                         headers={"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                sent += per_request
            if now - tick >= 1.0:
                tick = now
                on_tick()
    finally:
        conn.close()
    return sent


def _measure(t: Tier, target: Any, rate: float, seconds: float,
             traces_per_request: int = TRACES_PER_REQUEST) -> dict[str, Any]:
    """Offer ``rate`` spans/s to ``target`` (a sampler or a gateway) for
    ``seconds``; its CPU and memory, and what the tier did with them."""
    assert target.pid is not None
    is_gateway = target in t.gateways
    before = t.counts()
    cpu0, rss0 = _proc(target.pid)
    idle = (before.gateway if is_gateway else before.sampler)
    peak = {"traces_on_memory": 0.0, "rss_bytes": float(rss0),
            "heap_bytes": idle.get("heap_bytes", 0.0)}
    # When the memory_limiter first refused: the window and the heap then.
    first_refusal: dict[str, float] = {}
    refused0 = idle.get("limiter_refused", 0) + idle.get("refused", 0)

    def tick() -> None:
        own = _read_one(target)
        if own.get("traces_on_memory", 0) >= peak["traces_on_memory"]:
            peak.update({k: own.get(k, 0.0) for k in peak})
        peak["rss_bytes"] = max(peak["rss_bytes"], float(_proc(target.pid)[1]))
        refused = own.get("limiter_refused", 0) + own.get("refused", 0)
        if refused > refused0 and not first_refusal:
            first_refusal.update(
                seconds=round(time.monotonic() - t0, 1),
                traces_on_memory=own.get("traces_on_memory", 0),
                heap_mib=round(own.get("heap_bytes", 0) / 2**20),
                rss_mib=round(_proc(target.pid)[1] / 2**20))

    t0 = time.monotonic()
    sent = _offer(target.port, rate, seconds, SPANS_PER_TRACE, tick,
                  traces_per_request)
    took = time.monotonic() - t0
    cpu1, _ = _proc(target.pid)
    d = t.counts().minus(before)
    role = d.gateway if is_gateway else d.sampler
    result = {
        "offered_spans_per_s": rate, "sent_spans_per_s": round(sent / took),
        "spans_per_request": traces_per_request * SPANS_PER_TRACE,
        "accepted": role["accepted"], "refused": role["refused"],
        "memory_refused": role["memory_refused"],
        "limiter_refused": role.get("limiter_refused", 0),
        "first_refusal": first_refusal,
        "cpu_cores_used": round((cpu1 - cpu0) / took, 3),
        # The same from the collector's own otelcol_process_cpu_seconds.
        "cpu_cores_used_own_metric": round(role["cpu_seconds"] / took, 3),
        "spans_per_cpu_second": round(role["accepted"] / max(cpu1 - cpu0, 1e-9)),
        "rss_mib_idle": round(rss0 / 2**20),
        "rss_mib_peak": round(peak["rss_bytes"] / 2**20),
        "traces_per_s": round(sent / took / SPANS_PER_TRACE),
    }
    if not is_gateway:
        on_memory = peak["traces_on_memory"]
        result.update({
            "dropped_too_early": role["dropped_too_early"],
            "traces_on_memory_peak": on_memory,
            "heap_mib_at_peak": round(peak["heap_bytes"] / 2**20),
            "rss_mib_per_1000_traces": round(
                (peak["rss_bytes"] - rss0) / 2**20 / max(on_memory / 1000, 1e-9), 2),
            "heap_mib_per_1000_traces": round(
                (peak["heap_bytes"] - idle.get("heap_bytes", 0)) / 2**20
                / max(on_memory / 1000, 1e-9), 2),
        })
    return result


def _read_one(collector: Any) -> dict[str, float]:
    from harness.scale_out import read_counts
    return read_counts(collector.telemetry())


MEMORY_1GIB = {"OTELCOL_MEMORY_LIMIT_MIB": "819", "OTELCOL_MEMORY_SPIKE_MIB": "205"}


def capacity(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler (the single-collector configuration, decision_wait 10 s)
    fed directly, then a gateway in front of 2 samplers; each at the
    ``--rates`` for ``--seconds`` (more than the decision window: the window
    fills). Requests of 450 spans (what a gateway's batching sends a
    sampler) and, at the first two rates, of 18 (2 traces: what a service's
    exporter sends, to the single collector or a gateway); a sampler with
    the memory limits of a 1 GiB container at the last rate but one."""
    rates = [float(r) for r in args.rates.split(",")]
    result: dict[str, Any] = {"spans_per_trace": SPANS_PER_TRACE,
                              "decision_wait": args.decision_wait or "10s",
                              "rates": rates, "seconds": args.seconds}
    result["sampler"], result["sampler_small_requests"] = [], []
    for rate in rates:
        # A new sampler for each rate: Go keeps the memory a run took.
        with tier(samplers=1, gateways=0, decision_wait=args.decision_wait) as t:
            result["sampler"].append(_measure(t, t.samplers[0], rate, args.seconds))
    for rate in rates[:2]:
        with tier(samplers=1, gateways=0, decision_wait=args.decision_wait) as t:
            result["sampler_small_requests"].append(
                _measure(t, t.samplers[0], rate, args.seconds, 2))
    # The memory_limiter's limits of a 1 GiB container (80 % / 20 %: refusing
    # from 614 MiB of heap), set as fixed limits: where refusing starts.
    with tier(samplers=1, gateways=0, decision_wait=args.decision_wait,
              sampler_env=MEMORY_1GIB) as t:
        result["sampler_1gib_limits"] = _measure(
            t, t.samplers[0], rates[-2], args.seconds)
    with tier(samplers=2, gateways=1, decision_wait=args.decision_wait) as t:
        result["gateway"] = [_measure(t, t.gateways[0], rate, min(args.seconds, 20))
                             for rate in rates]
        result["gateway_small_requests"] = [
            _measure(t, t.gateways[0], rate, min(args.seconds, 20), 2)
            for rate in rates[:2]]
    return result


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "load": lambda a: load(a.traces, a.threads, a.decision_wait),
    "control": lambda a: control(min(a.traces, 300)),
    "faults": faults,
    "capacity": capacity,
    "combined": combined,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out")
    parser.add_argument("parts", nargs="*", choices=list(PARTS),
                        help="what to run (default: all)")
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--fault", action="append", choices=FAULTS,
                        help="faults: only this one (repeatable; default: "
                             "sampler, gateway, jaeger)")
    # The defaults are the run of collector/README.md's "Sizing" table.
    parser.add_argument("--rates", default="10000,20000,35000,50000",
                        help="capacity: spans per second offered, in turn")
    parser.add_argument("--seconds", type=float, default=25.0,
                        help="capacity: how long each rate is offered")
    parser.add_argument("--decision-wait", default=None,
                        help="the samplers' decision_wait (default: the shipped 10s)")
    args = parser.parse_args(argv)
    print(f"# scale-out tier: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
    for name in args.parts or list(PARTS):
        _report(name, PARTS[name](args))


if __name__ == "__main__":
    main()
