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
from typing import Any

from zaqar_otel import instrument


def _flush_then_terminate(signum: int, frame: FrameType | None) -> None:
    # Not SystemExit: wsgiref swallows it when it lands inside a request.
    instrument.shutdown()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


PROG = "zaqar-otel-server"


def _named_ours() -> None:
    """``zaqar-otel-server --help`` says ``usage: zaqar-otel-server``.

    ``zaqar.cmd.server.run`` parses the command line with
    ``cfg.CONF(project="zaqar", prog="zaqar-server")``, and oslo.config's
    argparse prints that prog. The global CONF gets a subclass whose call
    says ours instead, while still reading the default files and
    directories ``zaqar-server`` reads (oslo.config derives them from the
    prog).
    """
    from oslo_config import cfg

    class _ZaqarOtelServerConf(cfg.ConfigOpts):
        def __call__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("prog") == "zaqar-server" and not args:
                project = kwargs.get("project")
                if kwargs.get("default_config_files") is None:
                    kwargs["default_config_files"] = cfg.find_config_files(
                        project, "zaqar-server")
                if kwargs.get("default_config_dirs") is None:
                    kwargs["default_config_dirs"] = cfg.find_config_dirs(
                        project, "zaqar-server")
                kwargs["prog"] = PROG
            super().__call__(*args, **kwargs)

    if type(cfg.CONF) is cfg.ConfigOpts:
        cfg.CONF.__class__ = _ZaqarOtelServerConf


def main() -> None:
    instrument.install()
    _named_ours()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # SIGHUP left ignored (nohup) stays ignored, as for zaqar-server.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _flush_then_terminate)
    from zaqar.cmd import server

    server.run()


if __name__ == "__main__":
    main()
