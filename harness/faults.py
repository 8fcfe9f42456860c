"""Faults applied from outside the server: the network and the backend.

- :class:`Relay`: a TCP relay on a fixed loopback port in front of a
  server (a collector, Redis) that forwards, refuses, swallows (a black
  hole) or cuts the connection when a pattern passes;
- Redis SIGKILLed under load and restarted on the same port, plain and
  traced Zaqar side by side (:func:`sigkill_compared`): what each side's
  clients saw and what each Redis holds (:class:`Side`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness.clients import shape, signed
from harness.tracing import OTEL_SERVER, traced_extra
from zaqar_otel.demo.processes import RedisServer, free_port
from zaqar_otel.demo.receiver import OTLPReceiver
from zaqar_otel.demo.zaqar_server import (
    ZAQAR_SERVER_COMMAND,
    Deployment,
    ZaqarServer,
    redis_sql,
)

__all__ = [
    "REDIS_RETRIES",
    "SIGKILL_RERUNS",
    "PersistentRedis",
    "Relay",
    "Side",
    "check_sigkill",
    "redis_deployment",
    "sigkill_compared",
    "sigkill_under_load",
]


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


# -- Redis SIGKILLed mid-request, restarted on the same port --------------------


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
                assert side.redis.pid is not None
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
        by_phase: Counter[str] = Counter()
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
