"""Invariant 4 where MongoDB's errors quote documents (``redact.py``,
``logs.py``, ``messaging/links.py``'s MongoDB store): duplicate keys whose
errors carry a queue's metadata, a subscriber URL's credentials and a
posted body, and pre-signed URL signatures, against zaqar-otel-server on
SecantusDB with ``debug = True``: none of it in the exported bytes nor in a
line a zaqar_otel logger writes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from harness.clients import signed
from harness.leaks import leaked, where_leaked
from harness.servers import MongoServer
from harness.tracing import KEY, OTEL_SERVER, traced_extra
from zaqar_otel.demo.processes import free_port
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import ZaqarServer, mongo

pytestmark = pytest.mark.functional


SIGNED_URL_SECRET = "signed-url-secret-" + uuid.uuid4().hex
_OSLO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \d+ (\w+) (\S+) ")


def lines_by_logger(log: str) -> dict[str, list[str]]:
    """oslo.log lines by logger name. oslo.log prefixes every line of a
    record, tracebacks included; lines without the prefix (the WSGI access
    log, prints) are under "(not oslo.log)"."""
    out: dict[str, list[str]] = {}
    for line in log.splitlines():
        found = _OSLO_LINE.match(line)
        out.setdefault(found.group(2) if found else "(not oslo.log)", []).append(line)
    return out


def _next_object_ids(after: str, count: int) -> list[str]:
    """The ObjectIds pymongo makes next in the process that made ``after``:
    same 5 random bytes, counter + 1.., this second or the next few."""
    from bson import ObjectId

    raw = ObjectId(after).binary
    now = int(time.time())
    counter = int.from_bytes(raw[9:], "big")
    return [str(ObjectId(ts.to_bytes(4, "big") + raw[4:9]
                         + ((counter + n) % 2**24).to_bytes(3, "big")))
            for ts in range(now - 1, now + 4) for n in range(1, count + 1)]


def test_mongo_errors_with_documents_and_signed_urls_stay_out_of_exports_and_logs(
    receiver: OTLPReceiver,
) -> None:
    """Invariant 4 where MongoDB's errors quote documents: a duplicate queue
    (its metadata), a subscription made twice (a subscriber URL with a
    password and a token), a duplicate key on a message (the FIFO driver's
    unique marker index, hit by a planted document: the BulkWriteError holds
    the posted body) and on zaqar-otel's own link document (ids predicted
    from the previous message's ObjectId); and a pre-signed URL, used in its
    headers, in the query string and forged. With ``debug = True``, nothing
    of it is in the exported bytes nor in a line of a zaqar_otel logger."""
    import pymongo

    markers: dict[str, str] = {}

    def m(kind: str) -> str:
        value = uuid.uuid4().hex
        markers[value] = kind
        return value

    extra = traced_extra(receiver)
    extra["DEFAULT"] = {"debug": "True"}
    extra["signed_url"] = {"secret_key": SIGNED_URL_SECRET}
    answers: dict[str, int] = {}
    with MongoServer() as mongo_server:
        deployment = mongo(mongo_server.url)
        deployment.sections["drivers"]["message_store"] = "mongodb.fifo"
        with ZaqarServer(deployment, command=OTEL_SERVER, extra=extra) as server, \
                pymongo.MongoClient(mongo_server.url) as direct:
            headers, _ = signed()
            q, queue = "/v2/queues/docs", "test-project/docs"

            def call(step: str, method: str, path: str, body: Any = None,
                     more: Mapping[str, str] | None = None) -> Any:
                status, _, payload = server.request(
                    method, path, body, headers={**headers, **(more or {}),
                                                 "X-Auth-Token": m("auth token")})
                answers[step] = status
                return payload

            call("queue", "PUT", q, {"owner": m("queue metadata")})
            call("queue again (duplicate key)", "PUT", q,
                 {"owner": m("queue metadata")})
            first = call("post", "POST", f"{q}/messages", {"messages": [
                {"body": {"secret": m("message body")}, "ttl": 300}]})
            first_id = first["resources"][0].rsplit("/", 1)[1]
            # zaqar-otel's link document for the next message exists already.
            database = next(d for d in direct.list_database_names()
                            if direct[d]["messages"].count_documents({"p_q": queue}))
            planted = "f" * 48
            direct[database]["zaqar_otel_links"].insert_many(
                [{"_id": i, "c": planted} for i in _next_object_ids(first_id, 3)])
            second = call("post (link duplicate key)", "POST", f"{q}/messages", {
                "messages": [{"body": {"secret": m("message body")}, "ttl": 300}]})
            second_id = second["resources"][0].rsplit("/", 1)[1]
            link = direct[database]["zaqar_otel_links"].find_one({"_id": second_id})
            # A message document with the next marker exists already.
            counter = next(direct[d]["queues"].find_one({"p_q": queue})
                           for d in direct.list_database_names()
                           if "queues" in direct[d].list_collection_names())["c"]["v"]
            direct[database]["messages"].insert_one(
                {"p_q": queue, "k": counter, "t": 300, "tx": "planted", "b": {}})
            call("post (marker duplicate key)", "POST", f"{q}/messages", {"messages": [
                {"body": {"secret": m("message body"), "more": [m("message body")]},
                 "ttl": 300}]})
            hook = (f"http://user:{m('webhook password')}@127.0.0.1:{free_port()}"
                    f"/hook?token={m('webhook token')}")
            # SecantusDB does not enforce this unique index: no error here.
            for step in ("subscription", "subscription again"):
                call(step, "POST", f"{q}/subscriptions", {
                    "subscriber": hook, "ttl": 3600,
                    "options": {"secret": m("subscription options")}})
            shared = call("share", "POST", f"{q}/share",
                          {"methods": ["GET", "POST"], "paths": ["messages"]})
            signature = shared["signature"]
            url_headers = {"URL-Signature": signature, "URL-Expires": shared["expires"],
                           "URL-Methods": ",".join(shared["methods"]),
                           "URL-Paths": ",".join(shared["paths"]),
                           "X-Project-ID": shared["project"]}
            call("pre-signed GET", "GET", f"{q}/messages?echo=true", more=url_headers)
            call("pre-signed in the query", "GET",
                 f"{q}/messages?echo=true&signature={signature}"
                 f"&expires={shared['expires']}")
            call("forged signature", "GET", f"{q}/messages?echo=true", more={
                **url_headers, "URL-Signature": signature[::-1]})
            call("signature on the wrong method", "DELETE", f"{q}/messages?ids=x",
                 more=url_headers)
            canary_headers, canary_id = signed()
            assert server.request("GET", "/v2/queues", headers=canary_headers)[0] == 200
            receiver.wait_for(lambda s: s.trace_id == canary_id and s.kind == "SERVER")
            log = server.log_text()
    print("\n" + ", ".join(f"{k}: {v}" for k, v in answers.items()))
    by_logger = lines_by_logger(log)
    assert answers["queue"] == 201 and answers["queue again (duplicate key)"] == 204
    assert answers["post (link duplicate key)"] == 201
    assert answers["post (marker duplicate key)"] == 201
    # The duplicate keys Zaqar met: the pymongo command log shows them.
    duplicates = Counter(line.split('"commandName": "')[1].split('"')[0]
                         for line in by_logger.get("pymongo.command", [])
                         if "E11000" in line and '"commandName": "' in line)
    print(f"duplicate key errors by command: {dict(duplicates)}")
    assert answers["pre-signed GET"] == 200 and answers["forged signature"] == 404
    # The duplicate keys really happened.
    assert link is not None and link["c"] == planted, "no link duplicate key"
    assert "BulkWriteError" in "\n".join(by_logger.get("zaqar.storage.mongodb.messages",
                                                       []))
    ours = [line for name, lines in by_logger.items()
            if name.startswith("zaqar_otel") for line in lines]
    assert any("BulkWriteError" in line for line in ours), (
        "zaqar-otel logged nothing about its failed link write:\n"
        + "\n".join(ours[-20:]))
    secrets = set(markers) | {signature, SIGNED_URL_SECRET, KEY}
    kinds = {**markers, signature: "pre-signed URL signature",
             SIGNED_URL_SECRET: "signed-URL secret", KEY: "HMAC key"}
    exported = leaked(receiver.raw, secrets)
    logged = leaked(["\n".join(ours).encode()], secrets)
    elsewhere = {name: sorted({kinds[s] for s in leaked(["\n".join(lines).encode()],
                                                        secrets)})
                 for name, lines in by_logger.items() if not name.startswith(
                     "zaqar_otel")}
    print(f"{len(secrets)} secrets; exported {len(exported)}; in zaqar_otel log "
          f"lines ({len(ours)}) {len(logged)}; for the record, in other loggers' "
          f"lines: { {k: v for k, v in elsewhere.items() if v} }")
    assert not exported, "\n".join(where_leaked(receiver.raw, exported))
    assert not logged, "\n".join(line for line in ours
                                 if any(s in line for s in logged))[:3000]
