"""``zaqar-otel-server``: ``zaqar-server`` with the zaqar-otel hook applied.

Same arguments and configuration files as ``zaqar-server``::

    zaqar-otel-server --config-file /etc/zaqar/zaqar.conf

On SIGTERM, spans still queued are flushed (within ``[opentelemetry]
shutdown_timeout``), then the process ends by SIGTERM as ``zaqar-server``
does.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from zaqar_otel import startup


def _flush_then_terminate(signum: int, frame: FrameType | None) -> None:
    # Not SystemExit: wsgiref swallows it when it lands inside a request.
    startup.shutdown()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    startup.install()
    signal.signal(signal.SIGTERM, _flush_then_terminate)
    from zaqar.cmd import server

    server.run()


if __name__ == "__main__":
    main()
