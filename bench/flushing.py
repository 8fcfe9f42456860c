"""A server that flushes on SIGUSR1: ``python -m bench.flushing SCRIPT ARGS``.

``bench.instructions`` counts a server's instructions between two moments
and needs every span of the requests in between exported inside that window,
and nothing else. The batch processor exports on a timer (5 s by default),
so how many exports fall in a window would depend on how fast the server
runs under valgrind. The bench sets the timer far longer than a run
(``OTEL_BSP_SCHEDULE_DELAY``, which zaqar-otel and osprofiler's driver both
leave to the SDK) and asks for the flush itself: on SIGUSR1 this wrapper
calls ``force_flush()`` on the global TracerProvider (zaqar-otel's, or the
one osprofiler's OTLP driver installs; plain Zaqar has none), in the main
thread, which exports whatever is queued, then writes the number of flushes
done so far to ``FLUSHED`` in the working directory. The bench waits for
that number before it zeroes or dumps the counters.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from types import FrameType

FLUSHED = "bench-flushed"
_done = 0


def _flush(signum: int, frame: FrameType | None) -> None:
    global _done
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    ok = flush() if callable(flush) else True
    _done += 1
    with open(FLUSHED + ".tmp", "w") as out:
        out.write(f"{_done} {ok}\n")
    os.replace(FLUSHED + ".tmp", FLUSHED)


def main() -> None:
    script, *args = sys.argv[1:]
    signal.signal(signal.SIGUSR1, _flush)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
