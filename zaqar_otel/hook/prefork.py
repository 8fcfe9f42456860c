"""No thread of zaqar-otel's runs in a uwsgi master that forks its workers
without Python's at-fork hooks.

uwsgi (without ``lazy-apps``, its default) loads the app in the master,
then forks the workers from its C loop; unless ``py-call-uwsgi-fork-hooks``
is set, it forks without taking the GIL and without Python's fork steps
(``PyOS_BeforeFork``, ``PyOS_AfterFork_Child``). When another thread of the
master holds the GIL at that instant (the span export thread wakes every
``schedule_delay``; the metrics thread every export interval), the worker
gets a GIL taken by a thread that does not exist in it: it blocks for ever
in its first step (``uwsgi_python_master_fixup``, in ``take_gil``), serves
nothing, and on SIGTERM the master waits its ``worker-reload-mercy`` (60 s)
before it kills it (uwsgi issues 1149 and 2387). uwsgi forks again whenever
a worker is respawned, so such a master must run no Python thread at all.

``stop_threads`` stops the export threads once set-up is done there: each
worker starts its own, the span processor's at its first span (the SDK's
batch processor sees its pid change), the metrics pipeline's at its first
request. The master serves no request; a span it made at start-up stays
in its queue (a worker's queue starts empty)::

    if prefork.forks_without_hooks():
        prefork.stop_threads(state)
"""

from __future__ import annotations

import logging
import sys

from zaqar_otel import _sdk
from zaqar_otel.hook.state import Running

LOG = logging.getLogger(__name__)

_NO = (b"false", b"off", b"no", b"0", "false", "off", "no", "0")


def _on(options: object, name: str) -> bool:
    """An option of uwsgi's set as uwsgi reads a flag (``--x``: True;
    ``x = false`` in an ini file: off)."""
    value = options.get(name) if isinstance(options, dict) else None
    if isinstance(value, (bytes, str)):
        return value.strip().lower() not in _NO
    return bool(value)


def forks_without_hooks() -> bool:
    """True in a uwsgi master that loaded the app and forks its workers
    without Python's at-fork hooks (``master``, neither ``lazy-apps`` nor
    ``lazy``, no ``py-call-uwsgi-fork-hooks``)."""
    uwsgi = sys.modules.get("uwsgi")  # there only when embedded in uwsgi
    if uwsgi is None:
        return False
    try:
        options = uwsgi.opt
        worker = uwsgi.worker_id()
    except Exception:
        return False
    return (worker == 0 and _on(options, "master")
            and not any(_on(options, name) for name in
                        ("lazy-apps", "lazy", "py-call-uwsgi-fork-hooks")))


def stop_threads(state: Running) -> bool:
    """Stop the export threads ``state`` started (see the module); False,
    with a warning, where one runs on."""
    stopped = True
    if state.owns_provider and state.provider is not None:
        stopped = _sdk.stop_export_threads(state.provider)
    if state.metrics is not None:
        stopped = state.metrics.pipeline.stop_thread() and stopped
    if stopped:
        LOG.info("zaqar-otel: uwsgi's master forks its workers without Python's "
                 "at-fork hooks: its export threads are stopped; each worker "
                 "starts its own")
    else:
        LOG.warning("zaqar-otel: uwsgi's master forks its workers without "
                    "Python's at-fork hooks, and an export thread of its could "
                    "not be stopped: a worker forked while it runs may hang; "
                    "set lazy-apps or py-call-uwsgi-fork-hooks")
    return stopped
