"""``zaqar-otel-server``: ``zaqar-server`` with the zaqar-otel hook applied.

Same arguments and configuration files as ``zaqar-server``::

    zaqar-otel-server --config-file /etc/zaqar/zaqar.conf

On SIGTERM or SIGHUP, spans still queued are flushed (within
``[opentelemetry] shutdown_timeout``), then the process ends by that same
signal, as ``zaqar-server`` does (it has no SIGHUP handler: SIGHUP ends it).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from zaqar_otel import startup


def _flush_then_terminate(signum: int, frame: FrameType | None) -> None:
    # Not SystemExit: wsgiref swallows it when it lands inside a request.
    startup.shutdown()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def main() -> None:
    startup.install()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # SIGHUP left ignored (nohup) stays ignored, as for zaqar-server.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _flush_then_terminate)
    from zaqar.cmd import server

    server.run()


if __name__ == "__main__":
    main()
