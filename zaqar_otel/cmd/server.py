"""``zaqar-otel-server``: ``zaqar-server`` with the zaqar-otel hook applied.

Same arguments and configuration files as ``zaqar-server``::

    zaqar-otel-server --config-file /etc/zaqar/zaqar.conf

SIGTERM ends the server like Ctrl-C does, so spans still queued are flushed
(within ``[opentelemetry] shutdown_timeout``) before the process exits.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from zaqar_otel import instrument


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds the server loop; the atexit hook then flushes.
    sys.exit(0)


def main() -> None:
    instrument.install()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from zaqar.cmd import server

    server.run()


if __name__ == "__main__":
    main()
