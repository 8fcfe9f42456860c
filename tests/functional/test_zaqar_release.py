"""A real Zaqar of the installed release (20.1 to 23.x) and SQLAlchemy, traced.

``make breadth`` runs this with every Zaqar release on every Python the
package declares; the unit side (what the hooks rely on in each release) is
tests/unit/test_zaqar_release.py. Here, what differs between releases and
SQLAlchemy versions is checked at the receiver, and said:

* Zaqar 21 and later answer with ``x-openstack-request-id`` and the server
  span carries it as ``openstack.request_id``; Zaqar 20.1 has no request-id
  middleware, so neither is there, and nothing else changes.
* SQLAlchemy 2.1 is outside the range the sqlalchemy instrumentation 0.66
  declares (< 2.1): zaqar-otel skips its check there, says so in one log
  line, and the SQL spans arrive named by operation and table as on 2.0.
"""

from __future__ import annotations

import uuid
from importlib import metadata

import pytest
from packaging.version import Version

from harness.tracing import KEY, OTEL_SERVER, SQLALCHEMY_SCOPE, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec, idmap

pytestmark = pytest.mark.functional

ZAQAR = metadata.version("zaqar")
SQLALCHEMY = Version(metadata.version("sqlalchemy"))
SKIPPED_CHECK = "its version check is skipped"


def _has_request_id_middleware() -> bool:
    from zaqar.transport.wsgi import driver

    return hasattr(driver, "request_id")  # oslo_middleware.request_id, 21+


def test_a_signed_request_on_this_release_and_sqlalchemy(
        redis: RedisServer, receiver: OTLPReceiver) -> None:
    base_id = str(uuid.uuid4())
    headers = codec.encode(base_id, base_id, KEY)
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER,
                     extra=tracing(receiver)) as server:
        status, answer, _ = server.request("PUT", "/v2/queues/release-q",
                                           headers=headers)
        assert status == 201, answer
        trace_id = idmap.trace_id_from_base_id(base_id)
        receiver.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER")
        log = server.log_text()
    spans = [s for s in receiver.spans() if s.trace_id == trace_id]
    (top,) = [s for s in spans if s.kind == "SERVER"]
    assert top.name == "PUT /v2/queues/{queue_name}", top

    request_id = {k.lower(): v for k, v in answer.items()}.get("x-openstack-request-id")
    if _has_request_id_middleware():
        assert request_id and top.attributes.get("openstack.request_id") == request_id
    else:  # Zaqar 20.1: no request id anywhere, the span is otherwise the same
        assert request_id is None and "openstack.request_id" not in top.attributes, (
            ZAQAR, answer, top.attributes)

    names = {s.name for s in spans if s.scope == SQLALCHEMY_SCOPE}
    assert "INSERT Queues" in names, (ZAQAR, str(SQLALCHEMY), names)
    skipped = [line for line in log.splitlines() if SKIPPED_CHECK in line]
    if SQLALCHEMY >= Version("2.1"):
        assert len(skipped) == 1 and f"sqlalchemy {SQLALCHEMY}" in skipped[0], log
    else:
        assert not skipped, log
    assert " ERROR " not in log and "Traceback" not in log, log
