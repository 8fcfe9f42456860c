"""Requests/s and latency of a producer/consumer mix through real Zaqar servers.

Seven cases on each server kind (gunicorn with 8 threads, ``zaqar-server``):

(a) plain Zaqar (``zaqar.transport.wsgi.app:app`` / ``zaqar-server``),
    profiler disabled;
(a2) a second, identical plain Zaqar: how far two equal servers differ;
(b) zaqar-otel's entry point with ``[profiler] enabled = false``;
(c) zaqar-otel with every ``trace_*`` on, exporting to an OTLP receiver,
    requests without trace headers (``sample_ratio = 0``);
(d) as (c) with the database tracing osprofiler's driver also has (Zaqar's
    store trace points and SQL statements, ``trace_redis`` off), each mix
    signed with fresh OSProfiler headers (one trace per mix);
(e) plain Zaqar with osprofiler's own OTLP driver
    (``connection_string = otlp://...``), the same options and signed
    mixes: the anchor;
(d+r) as (d) plus ``trace_redis``: every Redis command an event of the
    span that sent it (the default), which osprofiler's driver cannot make;
(d+rs) as (d+r), every Redis command a span of its own
    (``redis_command_spans = true``).

All eight servers of a kind run at once, each with its own Redis and SQLite
file, so rounds alternate the cases without restarts. A round runs the same
number of mixes on every case from ``THREADS`` client threads, each with its
own keep-alive ``http.client`` connection. Reported per case: the median
over rounds of requests/s, p50 / p99 latency over every request of every
round, the median over rounds of the paired ratio to (a) in that round, and
the server's CPU time per request (user + system of the server process and
its workers, from psutil), which is steadier than req/s on a shared machine.

The OTLP receiver runs in a child process, so that decoding spans does not
take the load generator's GIL, and counts what every server exported; it
answers each export at once and decodes after the rounds. On
``zaqar-server`` each case's server runs under ``bench.flushing`` without
the 5 s export timer and flushes at the end of each of its rounds: its
export work is done in its own rounds (its CPU per request includes the
flush, its wall time does not), never in another case's, where it would be
charged to that case's latency on a machine of two cores.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import statistics
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import flushing
from harness.receivers import ReceiverProcess
from harness.tracing import ALL_TRACING, osprofiler_driver
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.zaqar_server import ZAQAR_SERVER_COMMAND, ZaqarServer, redis_sql
from zaqar_otel.propagation import codec

KEY = "zaqar-otel-bench-key"
THREADS = 4
REPO = Path(__file__).resolve().parents[1]
PROJECT = "bench-project"


def _gunicorn(app: str) -> tuple[str, ...]:
    return ("{bin}/gunicorn", "--bind", "127.0.0.1:{port}", "--threads", "8", app)


OTEL_SERVER = ("{bin}/zaqar-otel-server", "--config-file", "{config}")
# server kind -> (plain Zaqar command, zaqar-otel command)
KINDS: dict[str, tuple[Sequence[str], Sequence[str]]] = {
    "gunicorn": (_gunicorn("zaqar.transport.wsgi.app:app"),
                 _gunicorn("zaqar_otel.wsgi:application")),
    "zaqar-server": (ZAQAR_SERVER_COMMAND, OTEL_SERVER),
}

CASES = {
    "a": "plain Zaqar, profiler off",
    "a2": "plain Zaqar again (noise floor)",
    "b": "zaqar-otel, enabled = false",
    "c": "zaqar-otel on, unsigned requests (sample_ratio 0)",
    "d": "zaqar-otel on, signed requests",
    "e": "osprofiler OTLP driver, signed requests",
    "d+r": "as (d), plus Redis commands (events, the default)",
    "d+rs": "as (d+r), each Redis command a span (redis_command_spans)",
}
SIGNED = {"d", "e", "d+r", "d+rs"}
OTEL_CASES = {"b", "c", "d", "d+r", "d+rs", "c*"}
EXPORTING = ("c", "d", "e", "d+r", "d+rs")

# Every [profiler] trace_* option that traces this deployment (WSGI, Redis
# messages, SQLite management store, no pooling, no webhooks): the server
# span, Zaqar's trace points and the database spans. trace_message_links
# (off by default) is not database tracing: it writes to the message store.
OTEL_TRACING = {**ALL_TRACING, "hmac_keys": KEY, "trace_mongodb": "false",
                "trace_pooling": "false", "redis_command_spans": "false"}


#: The switches off by default or in (c) that this deployment could still
#: pay for at rest: their patches and instrumentors are installed, and an
#: unsampled request must cost nothing for them (issue 28, item 3).
EVERY_SWITCH = {"trace_mongodb": "true", "trace_pooling": "true",
                "trace_message_links": "true", "trace_websocket_transport": "true",
                "trace_requests": "true"}
#: (c*) is counted by ``bench.instructions`` only: (c) with every switch on.
INSTRUCTION_CASES = {**CASES, "c*": "as (c), every switch on, unsigned requests"}


def slug(case: str) -> str:
    """The case as it may appear in a queue name ("d+r" -> "dr", "c*" -> "call")."""
    return case.replace("+", "").replace("*", "all")


def service_name(kind: str, case: str) -> str:
    return f"bench-{kind}-{case}"


def config(kind: str, case: str, receiver_port: int,
           profiler_options: dict[str, str] | None = None,
           ) -> dict[str, dict[str, str]]:
    """The zaqar.conf sections (beyond the deployment's) of one case;
    ``profiler_options`` override the ``[profiler]`` ones of zaqar-otel's
    traced cases (``bench.instructions --set``)."""
    if case in ("a", "a2"):
        return {}
    if case == "b":
        return {"profiler": {"enabled": "false"}}
    if case in OTEL_CASES:
        profiler = dict(OTEL_TRACING)
        if case == "d":  # the options osprofiler's driver has in (e)
            profiler.update(trace_redis="false")
        if case == "c*":
            profiler.update(EVERY_SWITCH)
        if case == "d+rs":
            profiler.update(redis_command_spans="true")
        profiler.update(profiler_options or {})
        return {
            "profiler": profiler,
            "opentelemetry": {
                "endpoint": f"http://127.0.0.1:{receiver_port}",
                "service_name": service_name(kind, case),
                "sample_ratio": "0",
            },
        }
    # osprofiler's driver posts to http://<host:port>/v1/traces; its service
    # name is "<prefix>-Zaqar-Zaqar-server".
    return {**osprofiler_driver(receiver_port, KEY, trace_sqlalchemy="true"),
            "profiler_otlp": {"service_name_prefix": service_name(kind, case)}}


# -- the load generator -----------------------------------------------------------


@dataclass
class Tally:
    """What the client threads saw on one server."""

    latencies: list[float] = field(default_factory=list)  # seconds, measured only
    requests: int = 0  # everything sent, warm-up included
    errors: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError,
                     BrokenPipeError)


class Client:
    """One thread's keep-alive connection; ``mix()`` runs one session."""

    def __init__(self, port: int, tally: Tally, record: bool) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.tally = tally
        self.record = record
        self.latencies: list[float] = []
        self.sent = 0
        self.base = {
            "Client-ID": str(uuid.uuid4()),
            "X-Project-ID": PROJECT,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def call(self, method: str, path: str, headers: dict[str, str],
             body: Any = None, expect: int = 200) -> Any:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            t0 = time.perf_counter()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError) as exc:
                self.conn.close()
                # A keep-alive connection the server closed while idle: once
                # more on a fresh one, as HTTP clients do.
                if attempt or not isinstance(exc, _STALE_CONNECTION):
                    self.tally.error(f"{method} {type(exc).__name__}")
                    return None
                with self.tally.lock:
                    self.tally.reconnects += 1
                continue
            elapsed = time.perf_counter() - t0
            break
        self.sent += 1
        if self.record:
            self.latencies.append(elapsed)
        if resp.status != expect:
            self.tally.error(f"{method} -> {resp.status}")
            return None
        return json.loads(raw) if raw else None

    def mix(self, queue: str, signed: bool) -> None:
        """Create a queue, post 2, list, claim, delete the claimed, delete it."""
        headers = dict(self.base)
        if signed:
            base_id = str(uuid.uuid4())  # one trace per mix, caller at its root
            headers.update(codec.encode(base_id, base_id, KEY))
        q = f"/v2/queues/{queue}"
        self.call("PUT", q, headers, expect=201)
        messages = [{"ttl": 300, "body": {"event": e, "seq": i}}
                    for i, e in enumerate(("created", "updated"))]
        self.call("POST", q + "/messages", headers, {"messages": messages}, 201)
        self.call("GET", q + "/messages?echo=true", headers)
        claimed = self.call("POST", q + "/claims?limit=10", headers,
                            {"ttl": 60, "grace": 60}, 201)
        for message in (claimed or {}).get("messages", []):
            self.call("DELETE", message["href"], headers, expect=204)
        self.call("DELETE", q, headers, expect=204)

    def close(self) -> None:
        self.conn.close()
        with self.tally.lock:
            self.tally.requests += self.sent
            self.tally.latencies += self.latencies


def drive(port: int, tally: Tally, mixes_per_thread: int, signed: bool,
          prefix: str, record: bool = True) -> float:
    """Run the mixes from THREADS threads at once; the wall time in seconds."""
    clients = [Client(port, tally, record) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS + 1)

    def work(n: int, client: Client) -> None:
        barrier.wait()
        for i in range(mixes_per_thread):
            client.mix(f"{prefix}-t{n}-{i}", signed)

    threads = [threading.Thread(target=work, args=(n, c))
               for n, c in enumerate(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return wall


# -- the benchmark -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (gunicorn workers)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = p.cpu_times()
            total += times.user + times.system
    return total


@dataclass
class CaseResult:
    rps: list[float] = field(default_factory=list)  # per round
    cpu_ms: list[float] = field(default_factory=list)  # server CPU per request
    ratio: list[float] = field(default_factory=list)  # per round, vs (a)
    tally: Tally = field(default_factory=Tally)
    spans: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return _percentile(self.tally.latencies, 50) * 1e3

    @property
    def p99_ms(self) -> float:
        return _percentile(self.tally.latencies, 99) * 1e3


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


# Server log lines worth reporting (first occurrences, numbers stripped).
_LOG_MARKERS = ("ERROR", "CRITICAL", "Traceback", "dropped", "Dropped",
                "Queue is full", "Failed to export", "Exception")


# oslo.log: "<date> <time> <pid> <LEVEL> <logger> [<context>] <message>"; the
# lines of a traceback repeat the prefix without the [context] part.
_OSLO_LINE = re.compile(r"^\S+ \S+ \d+ (\w+) (\S+) (\[[^\]]*\] )?(.*)$")


def _log_findings(text: str, limit: int = 6) -> list[str]:
    """Distinct notable log records: first lines only, timestamps removed."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        match = _OSLO_LINE.match(line)
        if match:
            level, logger, ctx, message = match.groups()
            if ctx is None:  # a continuation line of the record above
                continue
            line = f"{level} {logger} {message}"
        if any(m in line for m in _LOG_MARKERS):
            key = line.strip()[:160]
            found[key] = found.get(key, 0) + 1
    return [f"{key} (×{n})" for key, n in list(found.items())[:limit]]


# Server kinds whose cases flush at the end of each of their rounds
# (bench.flushing): gunicorn's master takes SIGUSR1 for itself, and its
# workers keep the 5 s timer.
FLUSHED_KINDS = frozenset(("zaqar-server",))


@contextlib.contextmanager
def servers(kind: str, receiver_port: int) -> Iterator[dict[str, ZaqarServer]]:
    """The servers of one kind, one per case, each on its own Redis."""
    plain, otel = KINDS[kind]
    flushed = kind in FLUSHED_KINDS
    with contextlib.ExitStack() as stack:
        out = {}
        for case in CASES:
            redis = stack.enter_context(RedisServer())
            command = otel if case in OTEL_CASES else plain
            out[case] = stack.enter_context(ZaqarServer(
                redis_sql(redis.url),
                command=flushing.command(command) if flushed else command,
                env=flushing.environment(REPO) if flushed else None,
                extra=config(kind, case, receiver_port)))
        yield out


def measure_kind(kind: str, rounds: int, mixes_per_thread: int,
                 warmup_mixes: int, receiver: ReceiverProcess,
                 flush_wait: float = 7.0) -> dict[str, CaseResult]:
    results = {case: CaseResult() for case in CASES}
    order = list(CASES)
    with servers(kind, receiver.port) as running:
        for case, server in running.items():
            drive(server.port, results[case].tally, warmup_mixes, case in SIGNED,
                  f"warm-{slug(case)}", record=False)
        for r in range(rounds):
            walls: dict[str, float] = {}
            # Alternate the cases, starting one later each round so that no
            # case always follows the same one.
            for case in order[r % len(order):] + order[: r % len(order)]:
                res = results[case]
                server = running[case]
                assert server.pid is not None
                before, cpu = res.tally.requests, cpu_seconds(server.pid)
                walls[case] = drive(server.port, res.tally, mixes_per_thread,
                                    case in SIGNED, f"r{r}-{slug(case)}")
                if kind in FLUSHED_KINDS:
                    # The round's last spans, exported now (in its CPU, not
                    # its wall time) rather than by a timer in another case's
                    # round, where they would cost that case's latency.
                    flushing.flush(server)
                sent = res.tally.requests - before
                res.cpu_ms.append((cpu_seconds(server.pid) - cpu) / sent * 1e3)
                res.rps.append(sent / walls[case])
            for case in CASES:
                results[case].ratio.append(results[case].rps[-1] / results["a"].rps[-1])
        if kind not in FLUSHED_KINDS:
            # The exporters' schedule delay is 5 s: let the last batches arrive.
            time.sleep(flush_wait)
        stats = receiver.stats()
        for case, server in running.items():
            res = results[case]
            res.log = _log_findings(server.log_text())
            own = service_name(kind, case)
            for name, counts in stats.items():
                if name == own or name.startswith(own + "-"):  # (e): a suffix
                    res.spans = counts
    return results


def measure(rounds: int = 15, mixes_per_thread: int = 8, warmup_mixes: int = 4,
            kinds: Sequence[str] = tuple(KINDS)) -> dict[str, dict[str, CaseResult]]:
    with ReceiverProcess() as receiver:
        return {kind: measure_kind(kind, rounds, mixes_per_thread, warmup_mixes,
                                   receiver) for kind in kinds}


def table(results: dict[str, dict[str, CaseResult]]) -> str:
    rows = ["| server | case | req/s (median) | vs (a), paired median [min–max] "
            "| p50 ms | p99 ms | server CPU ms/req | CPU vs (a) | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, cases in results.items():
        for case, res in cases.items():
            errors = sum(res.tally.errors.values())
            cpu_ratio = _paired_cpu(res, cases["a"])
            ratio = (f"{statistics.median(res.ratio):.3f} "
                     f"[{min(res.ratio):.2f}–{max(res.ratio):.2f}]")
            rows.append(
                f"| {kind} | ({case}) {CASES[case]} | {statistics.median(res.rps):.1f} "
                f"| {ratio} | {res.p50_ms:.1f} | {res.p99_ms:.1f} "
                f"| {statistics.median(res.cpu_ms):.2f} | {cpu_ratio:.3f} | {errors} |")
    return "\n".join(rows)


def spans_table(results: dict[str, dict[str, CaseResult]]) -> str:
    """What reached the receiver vs what was sent (warm-up included)."""
    rows = ["| server | case | requests sent | server spans received | spans "
            "received | spans per request | error spans |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for kind, cases in results.items():
        for case in EXPORTING:
            res = cases[case]
            sent, spans = res.tally.requests, res.spans.get("spans", 0)
            rows.append(
                f"| {kind} | ({case}) | {sent} | {res.spans.get('server', 0)} "
                f"| {spans} | {spans / sent if sent else 0:.1f} "
                f"| {res.spans.get('error', 0)} |")
    return "\n".join(rows)


def findings(results: dict[str, dict[str, CaseResult]]) -> str:
    """Client errors, reconnects and notable server log lines, if any."""
    out = []
    for kind, cases in results.items():
        for case, res in cases.items():
            where = f"{kind} ({case})"
            if res.tally.errors:
                out.append(f"- {where}: client errors {res.tally.errors}")
            if res.tally.reconnects:
                out.append(f"- {where}: {res.tally.reconnects} keep-alive reconnects")
            out += [f"- {where} log: `{line}`" for line in res.log]
            for what, n in res.spans.get("errors_by_name", {}).items():
                out.append(f"- {where}: {n} exported error spans `{what}`")
    return "\n".join(out) or "- none"


def _paired(x: CaseResult, y: CaseResult) -> float:
    """Median over rounds of x's req/s over y's in the same round."""
    return statistics.median(a / b for a, b in zip(x.rps, y.rps, strict=True))


def _paired_cpu(x: CaseResult, y: CaseResult) -> float:
    """Median over rounds of x's server CPU per request over y's."""
    return statistics.median(a / b for a, b in zip(x.cpu_ms, y.cpu_ms, strict=True))


def targets(results: dict[str, dict[str, CaseResult]]) -> str:
    """The issue's targets, checked on the paired medians."""
    out = []
    for kind, cases in results.items():
        out.append(f"- {kind}: noise floor (a2)/(a) = "
                   f"{statistics.median(cases['a2'].ratio):.3f} "
                   f"[{min(cases['a2'].ratio):.2f}–{max(cases['a2'].ratio):.2f}]")
        for case in ("b", "c"):
            ratio = statistics.median(cases[case].ratio)
            verdict = "met" if ratio >= 0.98 else "MISSED"
            out.append(f"- {kind}: ({case})/(a) = {ratio:.3f} req/s (target >= 0.98): "
                       f"{verdict}; server CPU per request "
                       f"{_paired_cpu(cases[case], cases['a']):.3f}× (a)'s")
        a, a2 = cases["a"], cases["a2"]
        # The same figure for a second plain Zaqar: how far one run's p99
        # moves on its own (a few hundredths, at times 0.15); and each
        # case's against both plain servers' requests pooled, which one
        # server's bad minute moves less.
        floor = a2.p99_ms / a.p99_ms - a2.p50_ms / a.p50_ms
        plain = a.tally.latencies + a2.tally.latencies
        for case in ("d", "d+r", "d+rs"):
            d = cases[case]
            p50, p99 = d.p50_ms / a.p50_ms, d.p99_ms / a.p99_ms
            verdict = "met" if p99 - p50 <= 0.10 else "MISSED"
            pooled = (d.p99_ms / (_percentile(plain, 99) * 1e3)
                      - d.p50_ms / (_percentile(plain, 50) * 1e3))
            out.append(f"- {kind}: ({case}) p50 {p50:.3f}× (a)'s, p99 {p99:.3f}× "
                       f"(a)'s: the tail {p99 - p50:+.3f} beyond the median (target "
                       f"<= 0.10): {verdict}; against (a) and (a2) pooled "
                       f"{pooled:+.3f}; (a2)'s own, the noise floor: {floor:+.3f}")
        d_e = _paired(cases["d"], cases["e"])
        verdict = "met" if d_e > 1 else "MISSED"
        out.append(f"- {kind}: (d)/(e) = {d_e:.3f} req/s (target: (d) faster than "
                   f"(e), > 1): {verdict}; server CPU per request "
                   f"{_paired_cpu(cases['d'], cases['e']):.3f}× (e)'s")
        for case in ("d+r", "d+rs"):
            out.append(f"- {kind}: ({case})/(e) = "
                       f"{_paired(cases[case], cases['e']):.3f} req/s, server CPU "
                       f"per request {_paired_cpu(cases[case], cases['e']):.3f}× "
                       "(e)'s (Redis commands (e) cannot trace; not a target)")
    return "\n".join(out)


def summary(results: dict[str, dict[str, CaseResult]]) -> dict[str, Any]:
    """Plain numbers per server kind and case, for JSON and the plot."""
    return {kind: {case: {
        "label": CASES[case],
        "rps": statistics.median(res.rps),
        "vs_a": statistics.median(res.ratio),
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "cpu_ms": statistics.median(res.cpu_ms),
        "cpu_vs_a": statistics.median(
            c / a for c, a in zip(res.cpu_ms, cases["a"].cpu_ms, strict=True)),
        "rounds_rps": res.rps,
        "rounds_cpu_ms": res.cpu_ms,
        "requests": res.tally.requests,
        "errors": sum(res.tally.errors.values()),
        "spans": res.spans,
    } for case, res in cases.items()} for kind, cases in results.items()}


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.zaqar_cost [--rounds N] [--kind KIND]``: the tables
    and targets of this benchmark alone (the tail of (d): ``--rounds 30
    --kind zaqar-server``, about 2.5 minutes)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.zaqar_cost")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--kind", action="append", choices=list(KINDS),
                        help="server kind (repeatable; default: every kind)")
    args = parser.parse_args(argv)
    res = measure(rounds=args.rounds, kinds=args.kind or tuple(KINDS))
    print(table(res), spans_table(res), targets(res), findings(res), sep="\n\n")


if __name__ == "__main__":
    main()
