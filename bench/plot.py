"""The latency plot of docs/performance.md, from ``zaqar_cost.summary()``.

``python -m bench.plot results.json out.png`` redraws it from the JSON
that ``python -m bench.run --json results.json`` writes.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any


def plot(summary: dict[str, dict[str, dict[str, Any]]], path: str | Path) -> None:
    """p50 / p99 latency per case, one panel per server kind, then req/s and
    server CPU per request relative to (a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(summary)
    fig, axes = plt.subplots(1, len(kinds) + 2, figsize=(5 * len(kinds) + 10, 5),
                             constrained_layout=True)
    width = 0.38
    for ax, kind in zip(axes, kinds, strict=False):
        cases = summary[kind]
        names = list(cases)
        xs = range(len(names))
        p50 = [cases[c]["p50_ms"] for c in names]
        p99 = [cases[c]["p99_ms"] for c in names]
        ax.bar([x - width / 2 for x in xs], p50, width, label="p50")
        ax.bar([x + width / 2 for x in xs], p99, width, label="p99")
        ax.set_xticks(list(xs), [f"({c})" for c in names])
        ax.set_ylabel("latency per request, ms")
        ax.set_title(f"{kind}: request latency")
        ax.legend()
        for x, v in zip(xs, p99, strict=True):
            ax.annotate(f"{v:.0f}", (x + width / 2, v), ha="center", va="bottom",
                        fontsize=8)
    names = list(summary[kinds[0]])
    step = 0.8 / len(kinds)
    panels = (
        (axes[-2], lambda k, c: summary[k][c]["vs_a"],
         "req/s relative to (a), paired median", "throughput vs (a) (dashed: 0.98)"),
        (axes[-1], lambda k, c: summary[k][c]["cpu_vs_a"],
         "server CPU per request relative to (a), paired median",
         "server CPU per request vs (a)"),
    )
    for ax, value, ylabel, title in panels:
        for i, kind in enumerate(kinds):
            xs = [x - 0.4 + step * (i + 0.5) for x in range(len(names))]
            ax.bar(xs, [value(kind, c) for c in names], step, label=kind)
        ax.set_xticks(list(range(len(names))), [f"({c})" for c in names])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
    axes[-2].axhline(0.98, color="grey", linestyle="--", linewidth=1)
    axes[-2].set_ylim(0, 1.15)
    axes[-1].axhline(1.0, color="grey", linestyle="--", linewidth=1)
    legend = "   ".join(f"({c}) {case['label']}"
                        for c, case in summary[kinds[0]].items())
    fig.suptitle(textwrap.fill(legend, 200), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.plot",
        description="Redraw the latency plot of docs/performance.md from the "
        "JSON that `python -m bench.run --json FILE` writes.")
    parser.add_argument("results", metavar="RESULTS_JSON",
                        help="what bench.run --json wrote")
    parser.add_argument("out", metavar="OUT_PNG", help="the image to write")
    args = parser.parse_args(argv)
    try:
        summary = json.loads(Path(args.results).read_text())
    except (OSError, ValueError) as exc:
        print(f"python -m bench.plot: {args.results}: {exc}", file=sys.stderr)
        return 1
    plot(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
