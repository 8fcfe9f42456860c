"""uwsgi as an operator runs it: an HTTP router, 2 worker processes of 4
threads each, on ``zaqar_otel.wsgi:application`` (issue 14.5)::

    uwsgi --http 127.0.0.1:PORT --module zaqar_otel.wsgi:application \\
        --processes 2 --threads 4 --master --die-on-term --need-app

(``--master`` runs the router and restarts workers, ``--die-on-term`` makes
SIGTERM a stop rather than uwsgi 2.0's reload, ``--need-app`` refuses to
serve without the app.) The workers are forked from the master after it
loaded the app, without Python's at-fork hooks; each exports its own spans.
The other two layouts (a venv of Zaqar's own, a distribution's packages)
build venvs and run in ``make breadth``: tests/breadth/test_install_layouts.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from harness.tracing import ProfiledSession, assert_well_formed, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional

UWSGI_HTTP = ("{bin}/uwsgi", "--http", "127.0.0.1:{port}",
              "--module", "zaqar_otel.wsgi:application",
              "--processes", "2", "--threads", "4",
              "--master", "--die-on-term", "--need-app")


def test_uwsgi_http_two_processes_four_threads(redis: RedisServer,
                                               receiver: OTLPReceiver) -> None:
    if not (Path(sys.executable).parent / "uwsgi").exists():
        if os.environ.get("CI"):
            pytest.fail("uwsgi is not installed (the test extra has uWSGI)")
        pytest.skip("uwsgi is not installed (pip install uWSGI)")
    with ZaqarServer(redis_sql(redis.url), command=UWSGI_HTTP,
                     extra=tracing(receiver), stop_timeout=30) as server:
        sessions = [ProfiledSession(server, receiver, f"uwsgi-{i}") for i in range(3)]
        log = server.log_text()
    for session in sessions:
        assert_well_formed(session, "redis_message_controller")
    assert "spawned uWSGI http 1" in log and "spawned uWSGI worker 2" in log, log
    assert "Traceback" not in log, log
    # Each worker process exports under a service.instance.id of its own;
    # the router spreads the requests, so usually both are seen.
    instances = {s.resource.get("service.instance.id")
                 for session in sessions for s in session.spans}
    assert None not in instances and 1 <= len(instances) <= 2, instances
