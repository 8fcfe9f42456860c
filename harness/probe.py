"""The spans alive in a zaqar-otel-server process, read on a signal.

:data:`PROBE` is a ``sitecustomize`` for the server (on its PYTHONPATH);
:class:`Probe` writes it and gives the server environment that loads it,
and ``Probe.read(server)`` signals the server and returns its line: spans
alive, in the export queue, outside it, and the allocator's block count.
``rss_kib(pid)`` is any process's resident memory, now and at its peak.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from zaqar_otel.demo.zaqar_server import ZaqarServer

__all__ = ["PROBE", "Probe", "rss_kib"]

# A sitecustomize for the server process (on its PYTHONPATH): SIGUSR1 writes
# one JSON line about the spans alive in it to $ZAQAR_OTEL_PROBE_OUT.
# SIGUSR2 is oslo.reports' (Guru Meditation), SIGUSR1 is free.
PROBE = '''
import os
if os.environ.get("ZAQAR_OTEL_PROBE_OUT"):
    import gc, json, signal, sys
    if os.environ.get("ZAQAR_OTEL_PROBE_GC_OFF"):
        gc.disable()

    def _probe(signum, frame):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan

        def spans():
            return [o for o in gc.get_objects() if isinstance(o, ReadableSpan)]

        processors = getattr(getattr(trace.get_tracer_provider(),
                                     "_active_span_processor", None),
                             "_span_processors", ())
        queues = [p._batch_processor._queue for p in processors
                  if hasattr(p, "_batch_processor")]
        queued = {id(s) for q in queues for s in q}
        alive = spans()
        out = {"alive": len(alive), "queued": len(queued),
               "outside": sum(1 for s in alive if id(s) not in queued),
               "blocks": sys.getallocatedblocks(), "gc_counts": gc.get_count()}
        del alive
        if os.environ.get("ZAQAR_OTEL_PROBE_COLLECT"):
            out["collected"] = gc.collect()
            out["alive_after_collect"] = len(spans())
        with open(os.environ["ZAQAR_OTEL_PROBE_OUT"], "a") as f:
            f.write(json.dumps(out) + "\\n")

    signal.signal(signal.SIGUSR1, _probe)
'''


class Probe:
    """The PROBE sitecustomize in a temp dir, and the server env that loads it."""

    def __init__(self, directory: Path, gc_off: bool = False,
                 collect: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sitecustomize.py").write_text(PROBE)
        self.out = directory / "probe.jsonl"
        self.env = {"PYTHONPATH": str(directory), "ZAQAR_OTEL_PROBE_OUT": str(self.out)}
        if gc_off:
            self.env["ZAQAR_OTEL_PROBE_GC_OFF"] = "1"
        if collect:
            self.env["ZAQAR_OTEL_PROBE_COLLECT"] = "1"

    def read(self, server: ZaqarServer, timeout: float = 30) -> dict[str, Any]:
        """Signal the server; its probe line."""
        assert server.pid is not None
        before = self.out.read_text().count("\n") if self.out.exists() else 0
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while (self.out.read_text().count("\n") if self.out.exists() else 0) == before:
            assert time.monotonic() < deadline, "the probe did not answer"
            time.sleep(0.05)
        return json.loads(self.out.read_text().splitlines()[-1])


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid``, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields
