"""Issue 16: attacks not tried before, against a real zaqar-otel-server.

Every ``trace_*`` switch is on (``harness.tracing.tracing``), the
backends are real processes of our own, and each fault is applied to plain
Zaqar (``zaqar-server`` without the hook) in the same way where the claim is
"the answer is what Zaqar would have given" (invariant 6).

1. Redis SIGKILLed mid-request (``trace_message_links = true``), restarted on
   the same port: no message lost or duplicated, the answers those of plain
   Zaqar under the same fault, and no link write changes an answer.
2. Bulk spans from an unauthenticated client: over websocket, trace ids a
   ratio sampler always keeps, many actions on one connection; and signed
   OSProfiler headers a webhook subscriber receives, replayed.
3. MongoDB errors that carry documents (a duplicate key on a message) and
   pre-signed URL signatures: neither in exported bytes nor in a line a
   zaqar_otel logger writes.
5. Forked workers (gunicorn ``--preload``, uwsgi) with the collector down, a
   black hole, then back.

The long runs (memory against a black-hole collector, attack 4) are in
``tests/stress/test_attacks_long.py``; what they found is in docs/faults.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.servers import MongoServer
from harness.tracing import KEY, OTEL_SERVER, tracing
from harness.websocket import exchange
from zaqar_otel.demo.processes import RedisServer, WebhookSubscriber, free_port
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import (
    ZAQAR_SERVER_COMMAND,
    Deployment,
    ZaqarServer,
    mongo,
    redis_sql,
)
from zaqar_otel.propagation import codec

pytestmark = pytest.mark.functional

# The switches tracing() leaves off: every one on here.
EVERYTHING = {"trace_message_links": "true", "trace_websocket_transport": "true",
              "trace_requests": "true"}


def signed() -> tuple[dict[str, str], int]:
    """Fresh OSProfiler headers (a new trace) and that trace's id."""
    base_id = str(uuid.uuid4())
    return codec.encode(base_id, str(uuid.uuid4()), KEY), uuid.UUID(base_id).int


def shape(value: Any) -> Any:
    """What a client can rely on in a JSON answer: keys and types, and the
    text of error bodies (Zaqar's titles and descriptions are fixed)."""
    if isinstance(value, dict):
        if set(value) <= {"title", "description"}:
            return tuple(sorted(value.items()))
        return tuple(sorted((k, shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(sorted({repr(shape(v)) for v in value})))
    return type(value).__name__


# -- a TCP relay that can refuse, swallow, forward or cut -----------------------


class Relay:
    """A TCP relay on a fixed loopback port in front of ``upstream``.

    ``mode``: "forward" relays bytes both ways; "blackhole" accepts and then
    never reads nor answers (a collector that hangs at the TCP level);
    "refuse" closes the listening socket (connection refused), and reopens
    it on the same port when the mode changes again. ``cut_on(pattern,
    action)`` arms a one-shot trigger: the first client-to-upstream chunk
    holding ``pattern`` is not forwarded; ``action()`` runs, then both ends
    of that connection are closed.
    """

    def __init__(self, upstream: int | None = None, mode: str = "forward") -> None:
        self.upstream = upstream
        self.port = free_port()
        self._mode = "refuse"
        self._listener: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._trigger: tuple[bytes, Callable[[], None]] | None = None
        self.fired = threading.Event()
        self.connections = 0
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        assert value in ("forward", "blackhole", "refuse"), value
        with self._lock:
            self._mode = value
            if value == "refuse":
                listener, self._listener = self._listener, None
                if listener is not None:
                    _close(listener)
                return
            if self._listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(128)
                self._listener = listener
                threading.Thread(target=self._accept, args=(listener,),
                                 daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_on(self, pattern: bytes, action: Callable[[], None]) -> None:
        self.fired.clear()
        self._trigger = (pattern, action)

    def close(self) -> None:
        self.mode = "refuse"
        with self._lock:
            held, self._held = self._held, []
        for s in held:
            _close(s)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._held.append(client)
                mode = self._mode
            if mode == "blackhole":
                continue  # held open, never read: the kernel buffers fill up
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream), 2)
                upstream.settimeout(None)
            except (OSError, TypeError):
                _close(client)
                continue
            with self._lock:
                self._held.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        try:
            while data := source.recv(65536):
                trigger = self._trigger if outbound else None
                if trigger is not None and trigger[0] in data:
                    self._trigger = None
                    trigger[1]()
                    self.fired.set()
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# -- 2. bulk spans from an unauthenticated client --------------------------------

WS_RATIO = 0.01


def ws_exchange(port: int, requests: Sequence[dict[str, Any]],
                handshake: Mapping[str, str] | None = None,
                timeout: float = 30.0) -> list[dict[str, Any]]:
    """``requests`` on one connection, ``handshake`` headers on its upgrade."""
    return exchange(port, requests, timeout, handshake)


def ws_request(action: str, body: dict[str, Any],
               headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"action": action, "body": body,
            "headers": {"Client-ID": str(uuid.uuid4()),
                        "X-Project-ID": "test-project", **(headers or {})}}


def kept_by_trace_id_ratio() -> int:
    """A trace id ``TraceIdRatioBased`` keeps at any ratio: low 64 bits zero."""
    return random.getrandbits(63) + 1 << 64


@contextlib.contextmanager
def websocket_server(receiver: OTLPReceiver, ratio: float = WS_RATIO
                     ) -> Iterator[ZaqarServer]:
    extra = tracing(receiver, profiler=EVERYTHING,
                    otel={"sample_ratio": str(ratio), "honor_w3c_sampled": "false"})
    with RedisServer() as redis_server, ZaqarServer(
            redis_sql(redis_server.url), command=OTEL_SERVER, extra=extra,
            websocket=True) as server:
        yield server


def _ws_canary(server: ZaqarServer, receiver: OTLPReceiver) -> int:
    """A signed action; once its span is here, so is everything before it."""
    headers, trace_id = signed()
    (resp,) = ws_exchange(server.port, [ws_request(
        "queue_get_stats", {"queue_name": "attack"}, headers)])
    assert resp["headers"]["status"] == 200, resp
    receiver.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER")
    return trace_id


def _binomial_bound(n: int, p: float) -> int:
    """A count above which ``n`` draws at ``p`` land less than once in 10^6."""
    mean = n * p
    return int(mean + 8 * (mean * (1 - p)) ** 0.5 + 6)


def test_websocket_traceparent_ids_a_ratio_sampler_keeps_are_not_all_traced(
    receiver: OTLPReceiver,
) -> None:
    """Invariant 3 over websocket: trace ids with their low 64 bits zero
    (what ``TraceIdRatioBased`` keeps at any ratio), sampled flag set and
    not, in each action's headers and in the upgrade request, with
    ``sample_ratio = 0.01`` and ``honor_w3c_sampled = false``: traced at
    about the ratio, not every time."""
    actions = 400
    sent = []
    requests = [ws_request("queue_create", {"queue_name": "attack"})]
    for n in range(actions):
        trace_id = kept_by_trace_id_ratio()
        sent.append(trace_id)
        flags = "01" if n % 2 else "00"
        requests.append(ws_request("queue_get_stats", {"queue_name": "attack"}, {
            "traceparent": f"00-{trace_id:032x}-{random.getrandbits(63) + 1:016x}-"
                           f"{flags}"}))
    handshake = {"traceparent": f"00-{kept_by_trace_id_ratio():032x}-"
                                f"{0x1234:016x}-01"}
    with websocket_server(receiver) as server:
        started = time.monotonic()
        responses = ws_exchange(server.port, requests, handshake)
        took = time.monotonic() - started
        canary_id = _ws_canary(server, receiver)
        spans = [s for s in receiver.spans() if s.trace_id != canary_id]
    assert [r["headers"]["status"] for r in responses] == [201] + [200] * actions
    traced = {s.trace_id for s in spans if s.kind == "SERVER"}
    chosen = traced & set(sent)
    bound = _binomial_bound(actions + 1, WS_RATIO)
    print(f"\n{actions} websocket actions ({actions / took:.0f}/s) with trace ids "
          f"whose low 64 bits are 0: {len(chosen)} traced (ratio {WS_RATIO}: "
          f"expected {actions * WS_RATIO:.0f}, at most {bound}); "
          f"{len(spans)} spans in all")
    assert len(traced) <= bound, (
        f"{len(chosen)} of {actions} actions with caller-chosen trace ids "
        f"traced\n" + render_tree(spans[:40]))


def test_websocket_many_unsigned_actions_on_one_connection_are_traced_at_the_ratio(
    receiver: OTLPReceiver,
) -> None:
    """One connection, many unsigned actions without trace headers (and
    forged OSProfiler headers on half of them): each action is a new draw at
    the ratio, the connection does not carry a decision over, and no span is
    made outside the traced actions."""
    actions = 400
    forged = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "not-" + KEY)
    requests = [ws_request("queue_create", {"queue_name": "attack"})]
    for n in range(actions):
        action = ("message_post", {"queue_name": "attack", "messages": [
            {"body": {"n": n}, "ttl": 60}]}) if n % 4 == 0 else (
            "queue_get_stats", {"queue_name": "attack"})
        requests.append(ws_request(*action, forged if n % 2 else None))
    with websocket_server(receiver) as server:
        responses = ws_exchange(server.port, requests)
        canary_id = _ws_canary(server, receiver)
        spans = [s for s in receiver.spans() if s.trace_id != canary_id]
    statuses = Counter(r["headers"]["status"] for r in responses)
    assert statuses == {201: 1 + actions // 4, 200: actions - actions // 4}, statuses
    roots = [s for s in spans if s.parent_span_id is None]
    bound = _binomial_bound(actions + 1, WS_RATIO)
    print(f"\n{actions} unsigned websocket actions on one connection: "
          f"{len(roots)} traced (expected {actions * WS_RATIO:.0f}, at most "
          f"{bound}), {len(spans)} spans")
    assert len(roots) <= bound, render_tree(spans[:40])
    # Every span belongs to one of the traced actions.
    assert all(s.kind == "SERVER" and s.name.startswith("websocket ")
               for s in roots), render_tree(roots)
    assert {s.trace_id for s in spans} == {s.trace_id for s in roots}


class HookedServer:
    """zaqar-otel-server at ``sample_ratio`` with a webhook subscriber the
    attacking client owns on one queue; ``post`` tells what the delivery of
    each post brought the subscriber."""

    def __init__(self, server: ZaqarServer, hook: WebhookSubscriber, queue: str):
        self.server, self.hook, self.queue = server, hook, f"/v2/queues/{queue}"
        self.posts = 0
        assert server.request("PUT", self.queue)[0] == 201
        assert server.request("POST", f"{self.queue}/subscriptions", {
            "subscriber": hook.url + "/hook", "ttl": 3600})[0] == 201

    def post(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """One post; the trace headers of its delivery (lower-case names)."""
        before = len(self.hook.received)
        assert self.server.request("POST", f"{self.queue}/messages", {
            "messages": [{"body": {"n": self.posts}, "ttl": 60}]},
            headers=headers)[0] == 201
        self.posts += 1
        # Zaqar delivers from a thread pool: seconds on a busy machine.
        deadline = time.monotonic() + 30
        while len(self.hook.received) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.hook.received) > before, "a delivery did not arrive"
        received = {k.lower(): v for k, v in self.hook.received[before][1].items()}
        return {k: v for k, v in received.items()
                if k in ("traceparent", "tracestate", "x-trace-info", "x-trace-hmac")}

    def traced_replays(self, receiver: OTLPReceiver, headers: Mapping[str, str],
                       replays: int) -> int:
        """How many of ``replays`` stats requests with ``headers`` were traced."""
        receiver.clear()
        for _ in range(replays):
            assert self.server.request("GET", f"{self.queue}/stats",
                                       headers=headers)[0] == 200
        canary_headers, canary_id = signed()
        assert self.server.request("GET", "/v2/queues",
                                   headers=canary_headers)[0] == 200
        receiver.wait_for(lambda s: s.trace_id == canary_id and s.kind == "SERVER")
        return sum(1 for s in receiver.spans() if s.kind == "SERVER"
                   and s.name == "GET /v2/queues/{queue_name}/stats")


@contextlib.contextmanager
def hooked_server(receiver: OTLPReceiver, ratio: float) -> Iterator[HookedServer]:
    extra = tracing(receiver, profiler=EVERYTHING,
                    otel={"sample_ratio": str(ratio), "honor_w3c_sampled": "false"})
    extra["storage"] = {"message_pipeline": "zaqar.notification.notifier"}
    with RedisServer() as redis_server, WebhookSubscriber() as hook, ZaqarServer(
            redis_sql(redis_server.url), command=OTEL_SERVER, extra=extra) as server:
        yield HookedServer(server, hook, "hooked")


def _sampled(delivered: Mapping[str, str]) -> bool:
    flags = delivered.get("traceparent", "-00")[-2:]
    return bool(int(flags, 16) & 1)


HOOK_RATIO = 0.05


def test_signed_headers_a_webhook_receives_do_not_let_it_force_tracing(
    receiver: OTLPReceiver,
) -> None:
    """A client that owns a webhook subscriber sees the deliveries of its
    traced posts. Were they to carry ``X-Trace-Info`` / ``X-Trace-HMAC``
    signed with Zaqar's key, replaying those on its own unsigned requests
    would make Zaqar trace every one of them (invariant 3: only the key
    holders force tracing). Unsigned posts until 5 traced deliveries came."""
    with hooked_server(receiver, HOOK_RATIO) as hooked:
        stolen, sampled = None, 0
        while sampled < 5 and hooked.posts < 600:
            delivered = hooked.post()
            sampled += _sampled(delivered)
            if "x-trace-hmac" in delivered:
                stolen = {codec.X_TRACE_INFO: delivered["x-trace-info"],
                          codec.X_TRACE_HMAC: delivered["x-trace-hmac"]}
                break
        assert sampled, f"none of {hooked.posts} posts was traced: nothing tested"
        replays = 60
        traced = hooked.traced_replays(receiver, stolen, replays) if stolen else 0
    bound = _binomial_bound(replays, HOOK_RATIO)
    print(f"\n{hooked.posts} unsigned posts, {sampled} traced deliveries; signed "
          f"headers received: {stolen is not None}; replayed: {traced} of "
          f"{replays} traced (ratio {HOOK_RATIO}: at most {bound})")
    assert traced <= bound, (
        f"a webhook subscriber replays the X-Trace-HMAC Zaqar sent it and "
        f"{traced} of {replays} of its requests are traced")


def test_a_trace_id_seen_kept_replayed_is_not_traced_every_time(
    receiver: OTLPReceiver,
) -> None:
    """A ratio decision that depends only on the caller's trace id gives
    the same id the same answer: a client that learns one kept id (the
    delivery of a traced post is the only one with a sampled
    ``traceparent``) replays it on every request. Candidates are ids whose
    post was traced; one whose next 3 posts are all traced is kept."""
    with hooked_server(receiver, HOOK_RATIO) as hooked:
        kept, candidates = None, 0
        while kept is None and hooked.posts < 600:
            trace_id = random.getrandbits(127) + 1
            parent = f"00-{trace_id:032x}-{random.getrandbits(63) + 1:016x}-00"
            if not _sampled(hooked.post({"traceparent": parent})):
                continue
            candidates += 1
            if all(_sampled(hooked.post({"traceparent": parent})) for _ in range(3)):
                kept = parent
        assert candidates, f"none of {hooked.posts} posts was traced: nothing tested"
        replays = 60
        traced = (hooked.traced_replays(receiver, {"traceparent": kept}, replays)
                  if kept else 0)
    bound = _binomial_bound(replays, HOOK_RATIO)
    print(f"\n{hooked.posts} posts with chosen trace ids, {candidates} traced; a "
          f"kept id confirmed: {kept is not None}; replayed: {traced} of "
          f"{replays} traced (at most {bound})")
    assert traced <= bound, (
        f"{traced} of {replays} requests replaying one kept trace id traced")


# -- 1. Redis SIGKILLed mid-request, restarted on the same port --------------------


class PersistentRedis(RedisServer):
    """Redis with an append-only file fsynced before every reply: what it
    acknowledged survives SIGKILL, so a lost message is a real loss."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        argv[argv.index("--appendonly") + 1] = "yes"
        return [*argv, "--appendfsync", "always"]


# Zaqar retries a Redis call after a ConnectionError; its defaults (10 tries,
# 1 s doubling) would hold a request for minutes. Both servers get these.
REDIS_RETRIES = {"max_reconnect_attempts": "3", "reconnect_sleep": "0.1"}


def redis_deployment(url: str) -> Deployment:
    deployment = redis_sql(url)
    deployment.sections["drivers:message_store:redis"].update(REDIS_RETRIES)
    return deployment


def traced_extra(receiver: OTLPReceiver, **otel: str) -> dict[str, dict[str, str]]:
    return tracing(receiver, profiler=EVERYTHING, otel={"shutdown_timeout": "2",
                                                        **otel})


class Side:
    """One server (plain or traced) under load, and what its clients saw."""

    def __init__(self, name: str, server: ZaqarServer, redis_server: RedisServer,
                 queue: str) -> None:
        self.name, self.server, self.queue = name, server, queue
        self.redis = redis_server
        self.outcomes: Counter[tuple[str, str, int, Any]] = Counter()
        self.posted: dict[int, int] = {}
        self.slowest: dict[str, float] = {}
        self.errors: list[str] = []
        self.have: Counter[int] = Counter()  # what Redis holds after the run
        self.lost: list[int] = []
        self.duplicated: list[int] = []
        self.log = ""
        self._lock = threading.Lock()
        self._next = 0

    def call(self, phase: Callable[[], str], route: str, method: str, path: str,
             body: Any = None) -> tuple[int, Any]:
        headers, _ = signed()  # traced: every request; plain: ignored
        started = time.monotonic()
        at = phase()
        try:
            status, _, payload = self.server.request(method, path, body,
                                                     headers=headers, timeout=60)
        except OSError as exc:
            with self._lock:
                self.errors.append(f"{route}: {exc!r}")
            return -1, None
        took = time.monotonic() - started
        with self._lock:
            self.outcomes[(at, route, status, shape(payload))] += 1
            self.slowest[at] = max(self.slowest.get(at, 0.0), took)
        return status, payload

    def poster(self, phase: Callable[[], str], stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                n, self._next = self._next, self._next + 1
            status, _ = self.call(phase, "post", "POST",
                                  f"/v2/queues/{self.queue}/messages",
                                  {"messages": [{"body": {"n": n}, "ttl": 300}]})
            with self._lock:
                self.posted[n] = status

    def consumer(self, phase: Callable[[], str], stop: threading.Event) -> None:
        q = f"/v2/queues/{self.queue}"
        while not stop.is_set():
            self.call(phase, "claim", "POST", f"{q}/claims?limit=3",
                      {"ttl": 300, "grace": 60})
            self.call(phase, "list", "GET", f"{q}/messages?echo=true&limit=5")

    def stored(self) -> Counter[int]:
        """The messages a client can get, read from Redis itself: the ids in
        the queue's message set, each with its body (Zaqar lists claimed
        messages only with include_claimed, which Zaqar 23's Redis driver
        answers with a 503)."""
        import msgpack
        import redis as redis_client

        with redis_client.Redis("127.0.0.1", self.redis.port) as client:
            ids = client.zrange(f"test-project.{self.queue}.messages", 0, -1)
            with client.pipeline(transaction=False) as pipe:
                for message_id in ids:
                    pipe.hget(message_id, "b")
                bodies = pipe.execute()
        return Counter(msgpack.unpackb(b)["n"] for b in bodies if b is not None)


def sigkill_under_load(receiver: OTLPReceiver, outage: float) -> list[Side]:
    """Plain and traced Zaqar under the same load (3 posters and a claimer /
    lister each, every request signed), both Redis SIGKILLed at the same
    moment and restarted on the same port ``outage`` seconds later; what
    each side's clients saw, and the messages each Redis holds."""
    queue = "killed"
    with contextlib.ExitStack() as stack:
        sides = []
        for name, command, extra in (
                ("plain", ZAQAR_SERVER_COMMAND, {}),
                ("traced", OTEL_SERVER, traced_extra(receiver))):
            redis_server = stack.enter_context(PersistentRedis())
            server = stack.enter_context(ZaqarServer(
                redis_deployment(redis_server.url), command=command, extra=extra))
            assert server.request("PUT", f"/v2/queues/{queue}")[0] == 201
            sides.append(Side(name, server, redis_server, queue))
        phase = ["before"]
        stop = threading.Event()
        threads = [threading.Thread(target=work, args=(lambda: phase[0], stop))
                   for side in sides
                   for work in (side.poster, side.poster, side.poster, side.consumer)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            phase[0] = "down"
            for side in sides:
                os.kill(side.redis.pid, signal.SIGKILL)
            for side in sides:
                side.redis.stop(grace=0)  # reaps it; port and data dir are kept
            time.sleep(outage)
            # Both at once: one after the other gave the second side (the
            # traced one) the longer outage, by one Redis start.
            with ThreadPoolExecutor(len(sides)) as pool:
                for started in [pool.submit(side.redis.start) for side in sides]:
                    started.result()
            phase[0] = "after"
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join(90)
        assert not any(t.is_alive() for t in threads), "a client hangs"
        for side in sides:
            side.have = side.stored()
            side.log = side.server.log_text()
    return sides


def check_sigkill(sides: list[Side]) -> tuple[str, list[tuple[str, int, Any]]]:
    """Nothing acknowledged lost, nothing duplicated by the traced side, no
    client error, no traceback of zaqar-otel's; the report, and the kinds of
    answer (route, status, body shape) plain Zaqar did not give."""
    report = []
    for side in sides:
        acked = {n for n, s in side.posted.items() if s == 201}
        failed = set(side.posted) - acked
        side.lost = sorted(acked - set(side.have))
        side.duplicated = sorted(n for n, c in side.have.items() if c > 1)
        failed_but_stored = sorted(failed & set(side.have))
        by_phase = Counter()
        for (at, _, status, _), count in side.outcomes.items():
            by_phase[f"{at} {status}"] += count
        report.append(
            f"{side.name}: {len(side.posted)} posts ({len(acked)} acknowledged), "
            f"lost {len(side.lost)}, duplicated {len(side.duplicated)}, failed but "
            f"stored {len(failed_but_stored)}; answers {dict(sorted(by_phase.items()))}"
            f"; slowest {({k: round(v, 2) for k, v in side.slowest.items()})} s; "
            f"client errors {len(side.errors)}")
    plain, traced = sides
    plain_kinds = {key[1:] for key in plain.outcomes}
    extra_kinds = {key[1:] for key in traced.outcomes} - plain_kinds
    text = "\n".join(report)
    for side in sides:
        assert not side.errors, (side.name, side.errors[:3], text)
        assert not side.lost, (side.name, side.lost[:10], text)
    assert not traced.duplicated, (traced.duplicated, text)
    ours = [line for line in traced.log.splitlines()
            if "zaqar_otel" in line or "zaqar-otel" in line]
    assert not [line for line in ours if "Traceback" in line], "\n".join(ours[:20])
    return text, sorted(extra_kinds, key=repr)


#: A run where the traced server gave an answer plain Zaqar did not is run
#: again apart, this many times, as peers/zaqar_suite does with a test that
#: differs.
SIGKILL_RERUNS = 2


def sigkill_compared(receiver: OTLPReceiver, outage: float) -> tuple[list[Side], str]:
    """``sigkill_under_load`` checked by ``check_sigkill``; the sides of the
    last run and the report of every run.

    Which request outlasts the outage is chance: redis-py's own retries (ten,
    with jittered backoff, about 4 s in all, under 3.5 s one time in four)
    are all a message list gets (Zaqar's retry decorator returns its
    generator before any Redis command runs), so either side may answer the
    list in flight with a 503 during a 3 s outage, about one run in twenty
    on a busy machine. An answer only the traced side gave is therefore run
    again, ``SIGKILL_RERUNS`` times, each with a fresh pair of servers and
    the same fault: an answer of the traced side's alone in any rerun
    fails, as does a loss, a duplicate, a client error or a traceback in
    any run; one gone in every rerun is reported as timing.
    """
    sides = sigkill_under_load(receiver, outage)
    text, extra = check_sigkill(sides)
    if not extra:
        return sides, text
    runs = [f"run 1, answers only the traced server gave: {extra}\n{text}"]
    for rerun in range(2, SIGKILL_RERUNS + 2):
        sides = sigkill_under_load(receiver, outage)
        text, again = check_sigkill(sides)
        runs.append(f"run {rerun} (rerun), answers only the traced server gave: "
                    f"{again}\n{text}")
        assert not again, (
            f"answers only the traced server gave, again in a rerun: {again}\n"
            + "\n".join(runs))
    return sides, ("\n".join(runs) + f"\nflaky: the answers only the traced "
                   f"server gave in run 1 were gone in {SIGKILL_RERUNS} reruns")


def test_redis_sigkilled_under_load_answers_like_plain_zaqar_and_loses_nothing(
    receiver: OTLPReceiver,
) -> None:
    """A 3 s outage, shorter than Zaqar's and redis-py's retries most of the
    time: the requests in flight wait and then succeed on both sides, bar a
    list now and then (``sigkill_compared``); the 20 s outage that makes
    Zaqar answer 503 is in tests/stress/test_attacks_long.py."""
    _, report = sigkill_compared(receiver, outage=3.0)
    print("\n" + report)


@pytest.fixture(scope="module")
def link_cut() -> dict[str, dict[str, Any]]:
    """Redis SIGKILLed exactly when zaqar-otel writes or reads a message link
    (a relay in front of Redis holds that command back, kills Redis and
    refuses connections until Redis is restarted on the same port), for a
    post, a listing and a claim; plain Zaqar gets Redis killed right after
    the same requests' answers (it has no link command). What each saw."""
    results: dict[str, dict[str, Any]] = {}
    with OTLPReceiver() as receiver:
        for name in ("plain", "traced"):
            command, extra = ((ZAQAR_SERVER_COMMAND, {}) if name == "plain" else
                              (OTEL_SERVER, traced_extra(receiver)))
            with PersistentRedis() as redis_server, \
                    Relay(redis_server.port) as relay, \
                    ZaqarServer(redis_deployment(f"redis://127.0.0.1:{relay.port}"),
                                command=command, extra=extra) as server:
                results[name] = _cut_at_links(server, redis_server, relay)
    return results


def _cut_at_links(server: ZaqarServer, redis_server: RedisServer,
                  relay: Relay) -> dict[str, Any]:
    side = Side("", server, redis_server, "cut")

    def kill() -> None:
        relay.mode = "refuse"
        os.kill(redis_server.pid, signal.SIGKILL)

    def revive() -> None:
        redis_server.stop(grace=0)
        redis_server.start()
        relay.mode = "forward"

    q = "/v2/queues/cut"
    assert server.request("PUT", q)[0] == 201
    seen: dict[str, Any] = {}
    for step, method, path, body in (
            ("post", "POST", f"{q}/messages",
             {"messages": [{"body": {"n": 1}, "ttl": 300}]}),
            ("list", "GET", f"{q}/messages?echo=true", None),
            ("claim", "POST", f"{q}/claims", {"ttl": 300, "grace": 60})):
        relay.cut_on(b"zaqar_otel.link.", kill)
        started = time.monotonic()
        status, payload = side.call(lambda at=step: at, step, method, path, body)
        took = time.monotonic() - started
        fired = relay.fired.is_set()
        if not fired:
            kill()
        revive()
        seen[step] = (status, shape(payload), took, fired)
    # After the restart: the message is there once, and claimed.
    seen["again"] = side.call(lambda: "again", "again", "POST", f"{q}/claims",
                              {"ttl": 300, "grace": 60})[0]
    seen["stored"] = dict(side.stored())
    seen["log"] = server.log_text()
    return seen


def _describe(results: dict[str, dict[str, Any]]) -> str:
    return "\n".join(f"{name}: " + ", ".join(
        f"{step} {seen[step][0]} in {seen[step][2]:.2f} s"
        f"{' (Redis killed at the link command)' if seen[step][3] else ''}"
        for step in ("post", "list", "claim"))
        + f"; second claim {seen['again']}; stored {seen['stored']}"
        for name, seen in results.items())


def test_redis_killed_at_the_link_write_changes_no_answer(
    link_cut: dict[str, dict[str, Any]],
) -> None:
    """The post, listing and claim answer as plain Zaqar does, the message is
    stored once, and zaqar-otel logs no error about it."""
    print("\n" + _describe(link_cut))
    plain, traced = link_cut["plain"], link_cut["traced"]
    assert all(traced[step][3] for step in ("post", "list", "claim")), \
        "zaqar-otel wrote or read no link: nothing was cut"
    for step in ("post", "list", "claim"):
        assert traced[step][:2] == plain[step][:2], (step, traced[step], plain[step])
    assert traced["again"] == plain["again"] == 204
    assert traced["stored"] == plain["stored"] == {1: 1}
    ours = [line for line in traced["log"].splitlines() if "zaqar_otel" in line]
    assert not [line for line in ours if "ERROR" in line or "Traceback" in line], \
        "\n".join(ours[:20])


def test_redis_killed_at_the_link_write_delays_no_answer(
    link_cut: dict[str, dict[str, Any]],
) -> None:
    """Plain Zaqar answers at once (its own commands are done); the link
    command, a convenience, must not hold the answer for seconds."""
    print("\n" + _describe(link_cut))
    for step in ("post", "list", "claim"):
        traced, plain = link_cut["traced"][step][2], link_cut["plain"][step][2]
        assert traced < plain + 0.5, f"{step}: {traced:.2f} s vs {plain:.2f} s"


# -- 3. MongoDB errors that carry documents, pre-signed URLs ----------------------

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

    from tests.functional.test_privacy import leaked, where_leaked

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


# -- 5. forked workers: gunicorn --preload, uwsgi ------------------------------------

WORKERS = 4
# Both log each request with the pid of the worker that served it.
GUNICORN_PRELOAD = ("{bin}/gunicorn", "--bind", "127.0.0.1:{port}", "-w", str(WORKERS),
                    "--preload", "--access-logfile", "-",
                    "--access-logformat", "[pid: %(p)s] %(r)s %(s)s",
                    "zaqar_otel.wsgi:application")
UWSGI = ("{bin}/uwsgi", "--http-socket", "127.0.0.1:{port}", "--master",
         "--processes", str(WORKERS), "--die-on-term", "--need-app",
         "--module", "zaqar_otel.wsgi:application")
SERVERS = {"gunicorn --preload": GUNICORN_PRELOAD, "uwsgi": UWSGI,
           # Runs Python's at-fork hooks in the workers (uwsgi does not).
           "uwsgi --py-call-uwsgi-fork-hooks": (*UWSGI, "--py-call-uwsgi-fork-hooks")}


def _concurrently(server: ZaqarServer, requests: int, clients: int = 8
                  ) -> tuple[list[int], Counter[int], float]:
    """``requests`` signed stats requests from ``clients`` threads: their trace
    ids, their statuses and the slowest answer's seconds."""
    trace_ids: list[int] = []
    statuses: Counter[int] = Counter()
    slowest = [0.0]
    lock = threading.Lock()
    todo = list(range(requests))

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            headers, trace_id = signed()
            started = time.monotonic()
            try:
                status = server.request("GET", "/v2/queues/forked/stats",
                                        headers=headers, timeout=30)[0]
            except OSError:
                status = -1
            with lock:
                slowest[0] = max(slowest[0], time.monotonic() - started)
                statuses[status] += 1
                trace_ids.append(trace_id)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return trace_ids, statuses, slowest[0]


_SERVED_BY = re.compile(r"\[pid: <?(\d+)>?[|\]].*/v2/queues/forked/stats")


def _serving_pids(log: str) -> Counter[int]:
    """Requests per worker pid, from the access log lines."""
    return Counter(int(found.group(1)) for line in log.splitlines()
                   if (found := _SERVED_BY.search(line)))


def _worker_pids(server: ZaqarServer) -> set[int]:
    import psutil

    assert server.pid is not None
    return {p.pid for p in psutil.Process(server.pid).children(recursive=True)}


# uwsgi forks without Python's at-fork hooks: each worker still exports
# under its own service.instance.id (the resource notices the new pid).
@pytest.mark.parametrize("kind", list(SERVERS))
def test_forked_workers_export_their_own_spans_through_collector_faults(
    kind: str, redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    """4 workers forked from a master that loaded the app (gunicorn
    ``--preload``; uwsgi's default): with the collector refusing, then a
    black hole, then back, every request answers 200 at once; once it is
    back, every worker's spans arrive, each worker under its own
    ``service.instance.id``; SIGTERM with spans stuck in a black hole ends
    the server within ``shutdown_timeout`` + a few seconds."""
    command = SERVERS[kind]
    if not (Path(sys.executable).parent / command[0].removeprefix("{bin}/")).exists():
        pytest.skip(f"{command[0]} is not installed")
    shutdown_timeout = 2.0
    with Relay(receiver.port, mode="refuse") as collector:
        extra = traced_extra(receiver, timeout="2",
                             shutdown_timeout=str(shutdown_timeout))
        extra["opentelemetry"]["endpoint"] = collector.endpoint
        with ZaqarServer(redis_sql(redis.url), command=command, extra=extra,
                         stop_timeout=30) as server:
            assert server.request("PUT", "/v2/queues/forked")[0] == 201
            phases: dict[str, tuple[list[int], Counter[int], float]] = {}
            phases["refused"] = _concurrently(server, 80)
            collector.mode = "blackhole"
            phases["black hole"] = _concurrently(server, 80)
            collector.mode = "forward"
            time.sleep(2.5)  # exports stuck in the black hole time out (2 s)
            logged = len(server.log_text())
            phases["back"] = _concurrently(server, 160)
            back = set(phases["back"][0])
            try:
                receiver.wait_for(lambda s: s.kind == "SERVER" and s.trace_id in back,
                                  count=len(back), timeout=20)
            except AssertionError:
                pass  # counted below
            time.sleep(0.5)
            spans = receiver.spans()
            # The workers that served these requests: on a busy machine one
            # may have served only while the collector was down.
            served_back = _serving_pids(server.log_text()[logged:])
            workers = _worker_pids(server)
            # Spans queued, the collector a black hole again: then SIGTERM.
            collector.mode = "blackhole"
            _concurrently(server, 40)
            assert server.proc is not None
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(shutdown_timeout + 25)
            except subprocess.TimeoutExpired:
                pass
            took = time.monotonic() - started
            exited = server.proc.poll() is not None
            log = server.log_text()
    arrived = {s.trace_id for s in spans if s.kind == "SERVER"} & back
    instances = Counter(s.resource.get("service.instance.id") for s in spans
                        if s.kind == "SERVER" and s.trace_id in back)
    served = _serving_pids(log)
    span_ids = Counter(s.span_id for s in spans)
    duplicates = {i: n for i, n in span_ids.items() if n > 1}
    traces = Counter(s.trace_id for s in spans if s.kind == "SERVER")
    print(f"\n{kind}, {len(workers)} workers, requests served per worker "
          f"{sorted(served.values())} (once back: {sorted(served_back.values())}): "
          + "; ".join(
        f"{name}: {dict(st)} slowest {slow:.2f} s" for name, (_, st, slow)
        in phases.items()))
    print(f"  back: {len(arrived)} of {len(back)} server spans arrived, "
          f"server spans per service.instance.id {sorted(instances.values())}; "
          f"{len(spans)} spans, {len(duplicates)} span ids used more than once; "
          f"SIGTERM -> exit in {took:.1f} s (exited: {exited})")
    for name, (_, statuses, slowest) in phases.items():
        assert statuses == {200: sum(statuses.values())}, (name, statuses)
        assert slowest < 2.0, (name, slowest)
    assert "Traceback" not in log, log[-3000:]
    assert exited and took < shutdown_timeout + 8, f"SIGTERM: {took:.1f} s"
    assert len(arrived) == len(back), (
        f"{len(back) - len(arrived)} of {len(back)} requests' spans never arrived")
    assert len(workers) == WORKERS and len(served) > 1, (workers, served)
    # Two workers must never make the same span id (nor trace id).
    examples = [(f"{i:016x}", [x.name for x in spans if x.span_id == i])
                for i in list(duplicates)[:3]]
    assert not duplicates, (
        f"{len(duplicates)} span ids made by more than one worker, e.g. {examples}")
    assert max(traces.values()) == 1, "one trace id in two server spans"
    assert len(instances) == len(served_back), (
        f"{len(served_back)} workers served the requests once the collector was "
        f"back, their spans came under {len(instances)} service.instance.id: "
        f"{dict(instances)}")


# -- 4. memory against a collector that never answers -------------------------------

# A sitecustomize for the server process (on its PYTHONPATH): SIGUSR1 writes
# one JSON line about the spans alive in it to $ZAQAR_OTEL_PROBE_OUT.
# SIGUSR2 is oslo.reports' (Guru Meditation), SIGUSR1 is free.
PROBE = '''
import os
if os.environ.get("ZAQAR_OTEL_PROBE_OUT"):
    import gc, json, signal, sys
    if os.environ.get("ZAQAR_OTEL_PROBE_GC_OFF"):
        gc.disable()

    def _probe(signum, frame):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan

        def spans():
            return [o for o in gc.get_objects() if isinstance(o, ReadableSpan)]

        processors = getattr(getattr(trace.get_tracer_provider(),
                                     "_active_span_processor", None),
                             "_span_processors", ())
        queues = [p._batch_processor._queue for p in processors
                  if hasattr(p, "_batch_processor")]
        queued = {id(s) for q in queues for s in q}
        alive = spans()
        out = {"alive": len(alive), "queued": len(queued),
               "outside": sum(1 for s in alive if id(s) not in queued),
               "blocks": sys.getallocatedblocks(), "gc_counts": gc.get_count()}
        del alive
        if os.environ.get("ZAQAR_OTEL_PROBE_COLLECT"):
            out["collected"] = gc.collect()
            out["alive_after_collect"] = len(spans())
        with open(os.environ["ZAQAR_OTEL_PROBE_OUT"], "a") as f:
            f.write(json.dumps(out) + "\\n")

    signal.signal(signal.SIGUSR1, _probe)
'''


class Probe:
    """The PROBE sitecustomize in a temp dir, and the server env that loads it."""

    def __init__(self, directory: Path, gc_off: bool = False,
                 collect: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "sitecustomize.py").write_text(PROBE)
        self.out = directory / "probe.jsonl"
        self.env = {"PYTHONPATH": str(directory), "ZAQAR_OTEL_PROBE_OUT": str(self.out)}
        if gc_off:
            self.env["ZAQAR_OTEL_PROBE_GC_OFF"] = "1"
        if collect:
            self.env["ZAQAR_OTEL_PROBE_COLLECT"] = "1"

    def read(self, server: ZaqarServer, timeout: float = 30) -> dict[str, Any]:
        """Signal the server; its probe line."""
        assert server.pid is not None
        before = self.out.read_text().count("\n") if self.out.exists() else 0
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while (self.out.read_text().count("\n") if self.out.exists() else 0) == before:
            assert time.monotonic() < deadline, "the probe did not answer"
            time.sleep(0.05)
        return json.loads(self.out.read_text().splitlines()[-1])


def signed_stats(server: ZaqarServer, queue: str, requests: int) -> None:
    for _ in range(requests):
        headers, _ = signed()
        assert server.request("GET", f"/v2/queues/{queue}/stats",
                              headers=headers)[0] == 200


def test_failed_exports_leave_no_spans_behind_for_the_garbage_collector(
    tmp_path: Path, redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    """Against a black hole (1 s export timeout), the spans alive in the
    server are the queue and at most the batch being exported; none are left
    for the cyclic GC to find. With the GC off in the server (as deployments
    that ``gc.freeze()`` / tune thresholds approach), anything left in a
    reference cycle accumulates: a healthy collector is the control."""
    batch = 512
    results = {}
    for name in ("healthy", "black hole"):
        probe = Probe(tmp_path / name.replace(" ", "-"), gc_off=True)
        with Relay(receiver.port, mode="forward" if name == "healthy" else
                   "blackhole") as collector:
            extra = traced_extra(receiver, timeout="1", shutdown_timeout="1",
                                 max_export_batch_size=str(batch))
            extra["opentelemetry"]["endpoint"] = collector.endpoint
            with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra,
                             env=probe.env) as server:
                assert server.request("PUT", "/v2/queues/probe")[0] == 201
                signed_stats(server, "probe", 1500)
                time.sleep(4)  # a few more failed exports, no new spans
                results[name] = {**probe.read(server),
                                 "connections": collector.connections}
    for name, found in results.items():
        print(f"\n{name}: {found}")
    assert results["healthy"]["outside"] <= batch, results["healthy"]
    held = results["black hole"]["outside"]
    assert held <= batch, (
        f"{held} spans alive outside the span queue after "
        f"{results['black hole']['connections']} failed exports of {batch}")
