"""A server that flushes on SIGUSR1: ``python -m bench.flushing SCRIPT ARGS``.

``bench.instructions`` counts a server's instructions between two moments
and needs every span of the requests in between exported inside that
window, and nothing else; ``bench.zaqar_cost`` needs each case's export done
in its own rounds, not on a timer in another case's. The batch processor
exports on a timer (5 s by default), so how many exports fall in a window
would depend on how fast the server runs (under valgrind, or beside other
servers). The bench sets the timer far longer than a run
(``OTEL_BSP_SCHEDULE_DELAY``, which zaqar-otel and osprofiler's driver both
leave to the SDK) and asks for the flush itself: on SIGUSR1 this wrapper
calls ``force_flush()`` on the global TracerProvider (zaqar-otel's, or the
one osprofiler's OTLP driver installs; plain Zaqar has none), in the main
thread, which exports whatever is queued, then writes the number of flushes
done so far to ``FLUSHED`` in the working directory. ``flush(server)``
signals and waits for that number.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

FLUSHED = "bench-flushed"
#: The batch processors' timer, in ms: no timed export during a run (a day).
SCHEDULE_DELAY_MS = "86400000"
_done = 0


def command(server_command: Sequence[str]) -> tuple[str, ...]:
    """A ``ZaqarServer`` command (``{bin}/...``) run under this wrapper."""
    return ("{bin}/python", "-m", "bench.flushing", *server_command)


def environment(repo: Path) -> dict[str, str]:
    """The environment its server needs: this package, and no timed export."""
    return {"PYTHONPATH": str(repo), "OTEL_BSP_SCHEDULE_DELAY": SCHEDULE_DELAY_MS}


def flush(server: Any, timeout: float = 300.0) -> None:
    """Have ``server`` (a ``ZaqarServer`` run so) export every queued span,
    and wait until it did."""
    marker = Path(server.dir) / FLUSHED

    def done() -> int:
        try:
            return int(marker.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    before = done()
    assert server.pid is not None
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while done() <= before:
        if time.monotonic() > deadline or not server.running:
            raise RuntimeError(f"the server did not flush\n{server.log_tail()}")
        time.sleep(0.01)


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
