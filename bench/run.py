"""`tox -e bench` / `make bench`: every benchmark, one table each.

    python -m bench.run            # the full run (about 10 minutes)
    python -m bench.run --quick    # a smoke run of every benchmark
    python -m bench.run --json results.json --plot docs/performance-latency.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from bench import (
    encoding,
    instructions,
    propagation,
    saturation,
    tracepoint_cost,
    zaqar_cost,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true",
                        help="few rounds and mixes: checks the harness, not the "
                             "figures")
    parser.add_argument("--json", type=Path, help="write the Zaqar figures here")
    parser.add_argument("--plot", type=Path,
                        help="draw the latency plot (PNG, needs matplotlib)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"# zaqar-otel benchmarks: {_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}\n")

    print("## OSProfiler propagation (extract + inject)\n")
    if args.quick:
        print(propagation.table(propagation.measure(rounds=3, number=500)))
    else:
        print(propagation.table(propagation.measure()))

    print("\n## OTLP encoding per span (a batch of 512)\n")
    print(encoding.table(encoding.measure(**({"rounds": 3, "number": 1}
                                             if args.quick else {}))))

    print("\n## Trace point cost per call (one span each)\n")
    tp_args = {"rounds": 3, "number": 300} if args.quick else {}
    medians, exported = tracepoint_cost.measure(**tp_args)
    print(tracepoint_cost.table(medians))
    print(f"\nExported: {exported}")

    zaqar_args = ({"rounds": 2, "mixes_per_thread": 2, "warmup_mixes": 1}
                  if args.quick else {})
    results = zaqar_cost.measure(**zaqar_args)
    print(f"\n## Zaqar request mix ({zaqar_cost.THREADS} client threads)\n")
    print(zaqar_cost.table(results))
    print("\n### Spans received by the OTLP receiver\n")
    print(zaqar_cost.spans_table(results))
    print("\n### Targets\n")
    print(zaqar_cost.targets(results))
    print("\n### Errors and notable server log lines\n")
    print(zaqar_cost.findings(results))

    print("\n## Instructions per request (callgrind, zaqar-server)\n")
    if missing := instructions.missing_tools():
        print(f"skipped: needs {', '.join(missing)} (Debian: apt install valgrind)")
    elif args.quick:
        print(instructions.table(instructions.measure(("a", "c"), mixes_per_thread=1,
                                                      warmup_mixes=1)))
    else:
        print(instructions.table(instructions.measure()))

    print("\n## Saturated server (gunicorn 1 x 4 threads, wrk 8 connections)\n")
    if missing := saturation.missing_tools():
        print(f"skipped: needs {', '.join(missing)} (Debian: apt-get install -y wrk)")
    else:
        saturated = (saturation.measure(rounds=1, seconds=3, warmup=1) if args.quick
                     else saturation.measure())
        print(saturation.table(saturated), saturation.targets(saturated), sep="\n\n")

    summary = zaqar_cost.summary(results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.plot:
        from bench import plot

        plot.plot(summary, args.plot)
    print(f"\n(benchmarks took {time.monotonic() - started:.0f} s; load average "
          f"now {os.getloadavg()[0]:.2f})")


def _version() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True,
            text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown version"


if __name__ == "__main__":
    main()
