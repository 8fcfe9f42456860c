"""Instructions per request of the Zaqar cases, counted by callgrind.

req/s and CPU time on a shared machine drift by several per cent from one
round to the next, more than the effects the targets ask about ((c) within
2 % of (a)). The number of instructions a server executes per request does
not depend on the machine's load: this runs each case's ``zaqar-server``
under valgrind's callgrind, warms it up, zeroes the counters, sends the same
request mix as ``zaqar_cost`` and reads the instructions counted since (all
threads of the process, the batch exporter's included; the kernel's work for
system calls is not counted, and ``strace -c`` shows the same system calls
per request for (a) and (c)).

The count covers exactly the measured requests' spans and their export.
The batch processor exports on a timer (5 s by default), so under valgrind
the number of exports inside a window would depend on speed. Each server
runs under ``bench.flushing`` with the timer set far beyond the run
(``OTEL_BSP_SCHEDULE_DELAY``, which both zaqar-otel and osprofiler's driver
take from the SDK): after the warm-up the bench asks it to flush (SIGUSR1),
waits until it did, and zeroes the counters with an empty queue; after the
measured requests it asks for a flush again and dumps once it is done. The
exports in between are the ones the queue filling to a batch
(``max_export_batch_size``) sets off, and the final flush. Message ids,
timestamps and dict ordering vary from run to run: (a) and (a2) differ by
about 1 %. Each case runs
under valgrind about 50 times slower than natively; ``jobs`` cases run at
once, which changes no count.

    python -m bench.instructions            # every case
    python -m bench.instructions a c        # some
    python -m bench.instructions a c c*     # (c*): every switch on, unsigned
    python -m bench.instructions c --set trace_pooling=true   # one switch more
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import flushing, zaqar_cost
from harness.receivers import ReceiverProcess
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

KIND = "zaqar-server"  # one process, no forked workers to follow
TOOLS = ("valgrind", "callgrind_control")


@dataclass
class Count:
    requests: int
    instructions: int
    spans: int = 0  # exported inside the count (the receiver's tally)

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests

    @property
    def spans_per_request(self) -> float:
        return self.spans / self.requests


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _dumped_instructions(out_dir: Path) -> int:
    """The instruction count of the part dumped on request (not at exit)."""
    for path in out_dir.glob("callgrind.out*"):
        text = path.read_text(errors="replace")
        if "Trigger: Client Request" in text or "Trigger: dump" in text:
            match = re.search(r"^summary: (\d+)", text, re.M)
            if match:
                return int(match.group(1))
    raise RuntimeError(f"no dumped callgrind part in {out_dir}")


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True,
                   capture_output=True, timeout=120)


def _spans(receiver: ReceiverProcess, case: str) -> int:
    """Spans the receiver got so far from the server of ``case``."""
    with _receiver_lock:  # one question and its answer at a time
        stats = receiver.stats()
    own = zaqar_cost.service_name(KIND, case)
    return sum(counts["spans"] for name, counts in stats.items()
               if name == own or name.startswith(own + "-"))  # (e): a suffix


_receiver_lock = threading.Lock()


def count(case: str, receiver: ReceiverProcess, mixes_per_thread: int = 6,
          warmup_mixes: int = 2, profiler_options: dict[str, str] | None = None,
          ) -> Count:
    """Instructions the server of ``case`` executes for the measured mixes
    (``profiler_options``: ``[profiler]`` overrides of zaqar-otel's cases)."""
    plain, otel = zaqar_cost.KINDS[KIND]
    command = otel if case in zaqar_cost.OTEL_CASES else plain
    signed = case in zaqar_cost.SIGNED
    with contextlib.ExitStack() as stack:
        out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="zaqar-otel-callgrind-")))
        valgrind = ("valgrind", "--tool=callgrind",
                    f"--callgrind-out-file={out_dir}/callgrind.out")
        redis = stack.enter_context(RedisServer())
        server = stack.enter_context(ZaqarServer(
            redis_sql(redis.url), command=(*valgrind, *flushing.command(command)),
            env=flushing.environment(zaqar_cost.REPO),
            extra=zaqar_cost.config(KIND, case, receiver.port, profiler_options),
            startup_timeout=600, stop_timeout=120))
        assert server.pid is not None
        zaqar_cost.drive(server.port, zaqar_cost.Tally(), warmup_mixes, signed,
                         f"warm-{zaqar_cost.slug(case)}", record=False)
        flushing.flush(server)  # the warm-up's spans exported: an empty queue
        _control("--zero", server.pid)
        spans_before = _spans(receiver, case)
        tally = zaqar_cost.Tally()
        zaqar_cost.drive(server.port, tally, mixes_per_thread, signed,
                         f"m-{zaqar_cost.slug(case)}")
        if tally.errors:
            raise RuntimeError(f"({case}): client errors {tally.errors}")
        flushing.flush(server)  # every measured span exported, inside the count
        _control("--dump", server.pid)
        spans = _spans(receiver, case) - spans_before
        deadline = time.monotonic() + 60
        while True:
            try:
                return Count(tally.requests, _dumped_instructions(out_dir), spans)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def measure(cases: Sequence[str] = tuple(zaqar_cost.CASES), jobs: int = 2,
            **kwargs: Any) -> dict[str, Count]:
    with ReceiverProcess() as receiver, ThreadPoolExecutor(jobs) as pool:
        futures = {case: pool.submit(count, case, receiver, **kwargs)
                   for case in cases}
        return {case: future.result() for case, future in futures.items()}


def table(counts: dict[str, Count]) -> str:
    """Per request, and per exported span above (a) ("all in": the spans'
    share of every tracing cost, export included)."""
    rows = ["| case | requests | instructions per request (M) | vs (a) | vs (e) "
            "| spans per request | k instructions per span above (a) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    plain = counts.get("a")
    for case, c in counts.items():
        vs = [f"{c.per_request / counts[anchor].per_request:.3f}×"
              if anchor in counts else "–" for anchor in ("a", "e")]
        per_span = "–"
        if plain is not None and c.spans:
            above = c.per_request - plain.per_request
            per_span = f"{above / c.spans_per_request / 1e3:.0f}"
        rows.append(f"| ({case}) {zaqar_cost.INSTRUCTION_CASES[case]} | {c.requests} "
                    f"| {c.per_request / 1e6:.3f} | {vs[0]} | {vs[1]} "
                    f"| {c.spans_per_request:.2f} | {per_span} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help=f"some of {', '.join(zaqar_cost.INSTRUCTION_CASES)} "
                        "(default: all)")
    parser.add_argument("--mixes", type=int, default=6,
                        help="mixes per client thread (4 threads, 7 requests each)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="a [profiler] option of zaqar-otel's cases, e.g. "
                        "trace_pooling=true (repeatable)")
    args = parser.parse_args(argv)
    options = dict(item.partition("=")[::2] for item in args.set)
    if unknown := set(args.cases) - set(zaqar_cost.INSTRUCTION_CASES):
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if missing := missing_tools():
        raise SystemExit(f"needs {', '.join(missing)} (Debian: apt install valgrind)")
    cases = args.cases or list(zaqar_cost.INSTRUCTION_CASES)
    print(table(measure(cases, jobs=args.jobs, mixes_per_thread=args.mixes,
                        profiler_options=options)))


if __name__ == "__main__":
    main()
