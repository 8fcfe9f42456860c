"""Subscriber URLs are exported as scheme, host and port only (issue 24, item 4).

Slack, Teams and Discord webhooks carry their secret in the path
(``/services/T.../B.../<secret>``), others in a ``;token=`` path parameter;
a ``mailto:`` subscriber is a person's address. A real zaqar-otel-server
delivers to each (a webhook subscriber of our own, ``/bin/true`` as the mail
command): the ``deliver`` span's ``zaqar.subscriber`` and the webhook call's
``url.full`` / ``http.url`` hold the origin only, and no secret is anywhere in
the exported bytes.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from harness.tracing import KEY, OTEL_SERVER, tracing
from zaqar_otel.demo.client import profiled, zaqar_client
from zaqar_otel.demo.processes import RedisServer, WebhookSubscriber
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

pytestmark = pytest.mark.functional


def test_subscriber_urls_are_exported_as_their_origin(
        redis: RedisServer, receiver: OTLPReceiver) -> None:
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in ("path", "param",
                                                               "mail", "query")}
    true = shutil.which("true")
    assert true is not None
    extra = tracing(receiver, profiler={"trace_requests": "true"})
    extra["storage"] = {"message_pipeline": "zaqar.notification.notifier"}
    extra["notification"] = {"smtp_command": true}
    with WebhookSubscriber() as subscriber, ZaqarServer(
            redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        hooks = [f"{subscriber.url}/services/T0AAA/B0BBB/{secrets['path']}",
                 f"{subscriber.url}/hook;token={secrets['param']}"
                 f"?sig={secrets['query']}",
                 f"mailto:{secrets['mail']}@example.com"]
        client = zaqar_client(server.url)
        queue = client.queue("hooked", force_create=True)
        for hook in hooks:
            client.subscription("hooked", subscriber=hook, ttl=600)
        with profiled(KEY):
            queue.post([{"body": {"event": "created"}, "ttl": 120}])
        delivers = receiver.wait_for(lambda s: s.name == "deliver hooked", count=3,
                                     timeout=20)
        calls = receiver.wait_for(lambda s: s.kind == "CLIENT" and s.name == "POST",
                                  count=2, timeout=20)
        raw = receiver.raw
    paths = sorted(path for path, _, _ in subscriber.received)
    assert len(paths) == 2 and secrets["path"] in paths[1], paths  # delivered
    assert sorted(s.attributes["zaqar.subscriber"] for s in delivers) == sorted(
        ["mailto", subscriber.url, subscriber.url])
    for call in calls:
        urls = {call.attributes.get(n) for n in ("url.full", "http.url")} - {None}
        assert urls == {subscriber.url}, call.attributes
    leaked = [name for name, secret in secrets.items() if secret.encode() in raw]
    assert leaked == []
    assert b"T0AAA" not in raw and b"example.com" not in raw
