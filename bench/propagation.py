"""Extract and inject cost: our propagator vs osprofiler's codec vs W3C.

Each case runs in rounds, alternated with the others so drift on the machine
hits all of them alike; the table shows the median µs per call and the ratio
to osprofiler's own ``signed_unpack`` + ``signed_pack``.
"""

from __future__ import annotations

import statistics
import timeit
import uuid
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)
from osprofiler import _utils as osp_utils

from zaqar_otel.propagation import propagator

KEYS = ["rotated-out", "SECRET"]


def cases() -> dict[str, Callable[[], object]]:
    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    info, sig = osp_utils.signed_pack(
        {"base_id": base_id, "parent_id": parent_id}, KEYS[1])
    osp_headers = {"X-Trace-Info": info.decode(), "X-Trace-HMAC": sig}
    ours = propagator.OSProfilerPropagator(KEYS)
    w3c = TraceContextTextMapPropagator()
    ctx = ours.extract(osp_headers)
    w3c_headers: dict = {}
    w3c.inject(w3c_headers, ctx)

    def osprofiler_unpack_pack() -> None:
        data = osp_utils.signed_unpack(info, sig, KEYS)
        osp_utils.signed_pack(
            {"base_id": data["base_id"], "parent_id": data["parent_id"]},
            data["hmac_key"])

    def ours_extract_inject() -> None:
        ours.inject({}, ours.extract(osp_headers))

    def w3c_extract_inject() -> None:
        w3c.inject({}, w3c.extract(w3c_headers))

    assert trace.get_current_span(ctx).get_span_context().is_valid
    return {
        "osprofiler signed_unpack+signed_pack": osprofiler_unpack_pack,
        "zaqar_otel OSProfilerPropagator extract+inject": ours_extract_inject,
        "zaqar_otel extract only": lambda: ours.extract(osp_headers),
        "zaqar_otel inject only": lambda: ours.inject({}, ctx),
        "OTel TraceContext extract+inject": w3c_extract_inject,
    }


def measure(rounds: int = 15, number: int = 2000) -> dict[str, float]:
    """Median µs per call of each case."""
    funcs = cases()
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, func in funcs.items():
            samples[name].append(timeit.timeit(func, number=number) / number * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def table(medians: dict[str, float]) -> str:
    anchor = medians["osprofiler signed_unpack+signed_pack"]
    rows = ["| case | µs/call (median) | vs osprofiler |", "|---|---:|---:|"]
    rows += [f"| {name} | {us:.2f} | {us / anchor:.2f}× |"
             for name, us in medians.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(measure()))
