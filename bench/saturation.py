"""Throughput of a saturated Zaqar, and what happens to spans there.

gunicorn, 1 worker x 4 threads, driven by ``wrk`` (1 thread, 8
connections) with ``GET /v2/queues/q/messages?echo=true`` on a queue of 5
messages, in rounds of ``seconds`` per case, the cases alternated (each
round starts one case later), on 127.0.0.1:

(a) plain Zaqar;
(d) zaqar-otel, every request signed, Zaqar's trace points and SQL spans,
    no Redis command spans (the span set osprofiler's driver has);
(d+r) as (d) with Redis commands traced (``trace_redis``), each an event of
    the span that sent it: zaqar-otel's defaults;
(d+r+m) as (d+r) with metrics on (``[opentelemetry] metrics``, exported at
    the default interval, 60 s, and at exit);
(d+rs) as (d+r), each Redis command a span (``redis_command_spans``);
(e) osprofiler's own OTLP driver, every request signed.

zaqar-otel's cases run with their default queue and batch sizes. Spans
dropped at that load are read as an operator reads them: with metrics on
(d+r+m), ``zaqar_otel.spans.dropped`` by ``error.type`` from the last
export, at the server's exit; with metrics off (the default), the
"dropping spans" line zaqar-otel logs when dropping starts, counted in each
server's log, and the spans the receiver got per request.
Every request carries the same signed OSProfiler headers (wrk sends fixed
headers): one trace id for the whole run, which changes nothing of the cost
per request. The receiver (``harness.receivers.ReceiverProcess``, a child process
that decodes after the rounds) counts the spans that arrived.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``); ``make bench`` skips
this part with that line when it is missing::

    python -m bench.saturation                 # 3 rounds of 10 s per case
    python -m bench.saturation --rounds 1 --seconds 3
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bench import zaqar_cost
from harness.receivers import ReceiverProcess
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec

KIND = "gunicorn"
APP = {"plain": "zaqar.transport.wsgi.app:app", "otel": "zaqar_otel.wsgi:application"}
CASES = {
    "a": "plain Zaqar",
    "d": "zaqar-otel, signed, no Redis command spans",
    "d+r": "zaqar-otel, signed, Redis commands as events (the defaults)",
    "d+r+m": "as (d+r), metrics on",
    "d+rs": "zaqar-otel, signed, Redis command spans",
    "e": "osprofiler's OTLP driver, signed",
}
SIGNED = {"d", "d+r", "d+r+m", "d+rs", "e"}
METRICS = {"d+r+m"}  # their drops read from zaqar_otel.spans.dropped
DROP_LINE = "zaqar-otel: dropping spans"
QUEUE = "q"
PATH = f"/v2/queues/{QUEUE}/messages?echo=true"
MESSAGES = 5


def _base(case: str) -> str:
    """The bench.zaqar_cost case whose configuration ``case`` starts from."""
    return "d+r" if case in METRICS else case


def missing_tools() -> list[str]:
    return [] if shutil.which("wrk") else ["wrk"]


def _command(case: str) -> tuple[str, ...]:
    app = APP["otel"] if _base(case) in zaqar_cost.OTEL_CASES else APP["plain"]
    return ("{bin}/gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1",
            "--threads", "4", app)


def config(case: str, receiver_port: int) -> dict[str, dict[str, str]]:
    conf = zaqar_cost.config(KIND, _base(case), receiver_port)
    if case in METRICS:
        conf["opentelemetry"].update(
            metrics="true", service_name=zaqar_cost.service_name(KIND, case))
    return conf


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    spans: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # from the metric
    drop_lines: int = 0  # "dropping spans" lines in the server's log


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk(port: int, headers: dict[str, str], seconds: float) -> dict[str, float]:
    """One wrk run: req/s, p50 and p99 in ms, requests, non-2xx answers."""
    command = ["wrk", "-t1", "-c8", f"-d{seconds:g}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}{PATH}"],
                         capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    found = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "errors": 0.0,
    }
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        found[key] = _ms(match.group(1)) if match else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: (.*)", out)
    found["errors"] = float(errors.group(1)) if errors else 0.0
    if sockets:
        found["errors"] += sum(int(n) for n in re.findall(r"\d+", sockets.group(1)))
    return found


def _headers(case: str) -> dict[str, str]:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": zaqar_cost.PROJECT,
               "Accept": "application/json"}
    if case in SIGNED:
        base_id = str(uuid.uuid4())
        headers.update(codec.encode(base_id, base_id, zaqar_cost.KEY))
    return headers


@contextlib.contextmanager
def servers(receiver_port: int, cases: Sequence[str]
            ) -> Iterator[dict[str, ZaqarServer]]:
    with contextlib.ExitStack() as stack:
        out = {}
        for case in cases:
            redis = stack.enter_context(RedisServer())
            server = stack.enter_context(ZaqarServer(
                redis_sql(redis.url), command=_command(case),
                extra=config(case, receiver_port)))
            headers = {"Client-ID": str(uuid.uuid4())}
            assert server.request("PUT", f"/v2/queues/{QUEUE}",
                                  project=zaqar_cost.PROJECT)[0] == 201
            status, _, body = server.request(
                "POST", f"/v2/queues/{QUEUE}/messages", headers=headers,
                project=zaqar_cost.PROJECT,
                body={"messages": [{"ttl": 3600, "body": {"n": n}}
                                   for n in range(MESSAGES)]})
            assert status == 201, body
            out[case] = server
        yield out


def measure(rounds: int = 3, seconds: float = 10.0, warmup: float = 2.0,
            cases: Sequence[str] = tuple(CASES)) -> dict[str, Result]:
    results = {case: Result() for case in cases}
    with ReceiverProcess() as receiver, \
            servers(receiver.port, cases) as running:
        headers = {case: _headers(case) for case in cases}
        for case, server in running.items():
            wrk(server.port, headers[case], warmup)
        time.sleep(6)  # the warm-up's spans exported (5 s timer), not counted
        before = receiver.stats()
        order = list(cases)
        for r in range(rounds):
            for case in order[r % len(order):] + order[:r % len(order)]:
                got = wrk(running[case].port, headers[case], seconds)
                res = results[case]
                res.rps.append(got["rps"])
                res.p50_ms.append(got["p50_ms"])
                res.p99_ms.append(got["p99_ms"])
                res.requests += int(got["requests"])
                res.errors += int(got["errors"])
        time.sleep(7)  # the batch processors' 5 s timer
        for case, server in running.items():
            server.stop()  # a last export of spans and metrics, at exit
            results[case].drop_lines = server.log_text().count(DROP_LINE)
        time.sleep(1)  # the receiver decodes what came at the exits
        after = receiver.stats()
    for case in cases:
        own = zaqar_cost.service_name(KIND, case)
        for stats, sign in ((after, 1), (before, -1)):
            for name, counts in stats.items():
                if name == own or name.startswith(own + "-"):
                    results[case].spans += sign * counts["spans"]
                    if sign > 0:
                        results[case].dropped = dict(counts.get("dropped", {}))
    return results


def _drops(case: str, res: Result) -> str:
    """What the operator of ``case`` reads of its dropped spans."""
    if _base(case) not in zaqar_cost.OTEL_CASES:
        return "–"
    lines = f"{res.drop_lines} \"{DROP_LINE}\" lines"
    if case not in METRICS:
        return lines
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(res.dropped.items()))
    return f"{by_type or 'no metric received'}; {lines}"


def table(results: dict[str, Result]) -> str:
    rows = ["| case | req/s per round | req/s (median) | vs (a), paired median "
            "(range over rounds) "
            "| p50 / p99 ms (median of rounds) | errors | spans received per "
            "request | spans dropped |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    plain = results.get("a")
    for case, res in results.items():
        paired = "–"
        if plain is not None:
            ratios = [x / y for x, y in zip(res.rps, plain.rps, strict=True)]
            paired = (f"{statistics.median(ratios):.3f} "
                      f"({min(ratios):.2f}–{max(ratios):.2f})")
        rows.append(
            f"| ({case}) {CASES[case]} | {', '.join(f'{x:.0f}' for x in res.rps)} "
            f"| {statistics.median(res.rps):.0f} | {paired} "
            f"| {statistics.median(res.p50_ms):.1f} / "
            f"{statistics.median(res.p99_ms):.1f} "
            f"| {res.errors} | {res.spans / res.requests if res.requests else 0:.1f} "
            f"| {_drops(case, res)} |")
    return "\n".join(rows)


def targets(results: dict[str, Result]) -> str:
    """Issue 28's: the fully traced case with the defaults (d+r) at 0.85 of
    plain Zaqar's saturated throughput or more, and no span dropped (no
    "dropping spans" line; with metrics on, the metric's count is 0)."""
    if "a" not in results or "d+r" not in results:
        return ""
    ratio = statistics.median(x / y for x, y in zip(
        results["d+r"].rps, results["a"].rps, strict=True))
    dropped = sum(results[c].drop_lines + sum(results[c].dropped.values())
                  for c in results if c in ("d+r", *METRICS))
    return (f"- (d+r)/(a) = {ratio:.3f} (target >= 0.85): "
            f"{'met' if ratio >= 0.85 else 'MISSED'} in this run (the same "
            f"code moves by about ±3 % from run to run on a quiet 2-core "
            f"machine: judge it over several runs); drops seen with the "
            f"defaults and with metrics on: {dropped} (target 0): "
            f"{'met' if dropped == 0 else 'MISSED'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.saturation")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help=f"some of {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)
    if missing := missing_tools():
        raise SystemExit(f"needs {', '.join(missing)} (Debian: apt-get install -y wrk)")
    results = measure(args.rounds, args.seconds, cases=args.cases or tuple(CASES))
    print(table(results), targets(results), sep="\n\n")


if __name__ == "__main__":
    main()
