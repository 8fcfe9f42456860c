"""Keystone + Zaqar (under zaqar-otel) + the real ``openstack`` CLI, one trace.

``Stack`` starts, on 127.0.0.1 and in temp dirs: an OTLP/HTTP receiver; a
Keystone (own venv, gunicorn, SQLite: :mod:`harness.keystone`) exporting
through osprofiler's own OTLP driver; a redis-server; a Zaqar under
``zaqar-otel-server`` with ``auth_strategy = keystone`` (keystonemiddleware
validates every token with Keystone through ``requests``, traced with
``[profiler] trace_requests``); and registers Zaqar in Keystone's catalog as
the ``messaging`` service. ``cli()`` runs ``openstack --os-profile KEY ...``
as a member of project ``demo``. The checks of such a trace, as Jaeger
returns it, are here too: peers/keystone's tests and the benchmarks'
combined scale-out run (bench/scale_out.py) share them.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.keystone import (
    DOMAIN,
    KEYSTONE_VERSION,
    CliResult,
    KeystoneServer,
    keystone_venv,
    keystone_venv_ready,
    openstack,
)
from harness.scale_out import CLIENT_SERVICE
from harness.servers import unavailable
from harness.tracing import KEY, OTEL_SERVER, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

REQUESTS_SCOPE = "opentelemetry.instrumentation.requests"
KEYSTONE_SERVICE = "keystone-public"  # osprofiler's driver: "<project>-<service>"

# What the test runs, in order, and the one Zaqar request each one sends.
QUEUE = "peer-keystone"
COMMANDS: list[tuple[list[str], str]] = [
    (["messaging", "queue", "create", QUEUE], "PUT /v2/queues/{queue_name}"),
    (["messaging", "queue", "list"], "GET /v2/queues"),
    (["messaging", "message", "post", QUEUE,
      '[{"body": {"event": "created", "n": 1}, "ttl": 300}]'],
     "POST /v2/queues/{queue_name}/messages"),
    (["messaging", "claim", "create", QUEUE, "--ttl", "60", "--grace", "60"],
     "POST /v2/queues/{queue_name}/claims"),
    (["messaging", "queue", "delete", QUEUE], "DELETE /v2/queues/{queue_name}"),
]


def openstack_bin() -> Path:
    """The ``openstack`` of this interpreter's venv (python-openstackclient)."""
    return Path(sys.executable).parent / "openstack"


def keystone_profiler(receiver: OTLPReceiver) -> dict[str, str]:
    """keystone.conf ``[profiler]``: osprofiler's own OTLP driver, Zaqar's key."""
    return {
        "enabled": "true",
        "hmac_keys": KEY,
        "connection_string": f"otlp://127.0.0.1:{receiver.port}",
        # Keystone's SQL as osprofiler spans would add ~100 spans per token
        # validation; the point here is where Keystone's request spans hang.
        "trace_sqlalchemy": "false",
    }


def require_stack() -> None:
    """Skip (fail under $CI) without Keystone's venv or the openstack CLI."""
    if not keystone_venv_ready():
        unavailable(
            f"Keystone {KEYSTONE_VERSION}'s venv (.cache/{keystone_venv().name}) "
            "is not installed: run `make peer-keystone` or `tox -e peer-keystone`")
    if not openstack_bin().exists():
        unavailable("the openstack CLI is not installed in this venv: "
                    "pip install python-openstackclient (or make peer-keystone)")


def tags(span: dict[str, Any]) -> dict[str, Any]:
    """A Jaeger span's tags as a dict."""
    return {t["key"]: t["value"] for t in span["tags"]}


def whole_in_jaeger(jaeger: Any, trace_id: str, route: str, timeout: float = 90.0,
                    quiet: float = 3.0) -> dict[str, Any]:
    """The trace (Jaeger's ``/api/traces`` form) once Zaqar's server span
    ``route`` is in, every keystonemiddleware call has Keystone's span under
    it, and ``quiet`` seconds passed without news (Keystone exports every
    5 s, osprofiler's driver's default; a sampling collector decides later)."""
    return all_whole_in_jaeger(jaeger, {trace_id: route}, timeout, quiet)[trace_id]


def all_whole_in_jaeger(jaeger: Any, routes: dict[str, str], timeout: float = 90.0,
                        quiet: float = 3.0) -> dict[str, dict[str, Any]]:
    """:func:`whole_in_jaeger` for several traces at once (trace id -> the
    route of Zaqar's server span in it), waited for together: the traces
    by id."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = dict.fromkeys(routes, -1)
    while time.monotonic() < deadline:
        traces: dict[str, dict[str, Any]] = {}
        for trace_id, route in routes.items():
            trace = jaeger.trace(trace_id)
            spans = trace["spans"] if trace else []
            parents = {r["spanID"] for s in spans for r in s["references"]}
            calls = [s["spanID"] for s in spans
                     if tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
            if (trace and any(s["operationName"] == route for s in spans) and calls
                    and all(c in parents for c in calls)
                    and len(spans) == counts[trace_id]):
                traces[trace_id] = trace
            counts[trace_id] = len(spans)
        if len(traces) == len(routes):
            return traces
        time.sleep(quiet)
    raise AssertionError(f"traces not whole in Jaeger after {timeout:.0f}s "
                         f"(spans so far, by trace id): {counts}")


def assert_one_jaeger_tree(
        trace: dict[str, Any],
) -> tuple[dict[str, str], dict[str, dict[str, Any]], dict[str, str | None]]:
    """Zaqar's and Keystone's spans (Jaeger's ``/api/traces`` form), one
    tree, nothing Jaeger would warn of: each span id once, every parent in
    the trace. Returns each process's service, the spans by id and each
    span's parent id (None: a root)."""
    spans = trace["spans"]
    service = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    assert set(service.values()) == {"zaqar", KEYSTONE_SERVICE}
    assert [s["warnings"] for s in spans if s.get("warnings")] == []
    by_id = {s["spanID"]: s for s in spans}
    assert len(by_id) == len(spans)
    parent = {s["spanID"]: next((r["spanID"] for r in s["references"]
                                 if r["refType"] == "CHILD_OF"), None)
              for s in spans}
    assert all(p in by_id for p in parent.values() if p is not None)
    return service, by_id, parent


def _worker(trace: dict[str, Any], span: dict[str, Any]) -> str:
    found = {t["key"]: t["value"]
             for t in trace["processes"][span["processID"]].get("tags", [])}
    return str(found.get("service.instance.id", span["processID"]))


def combined_shape(trace: dict[str, Any]) -> dict[str, Any]:
    """A kept trace of the scale-out tier's combined run (bench/scale_out.py,
    test_scale_out.py): whole (the client's span the one root, one tree,
    each span once, no Jaeger warning, Keystone's server span under each of
    keystonemiddleware's calls), its Zaqar workers and Keystone's spans."""
    spans = trace["spans"]
    service = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    ids = {s["spanID"] for s in spans}
    parent = {s["spanID"]: next((r["spanID"] for r in s["references"]
                                 if r["refType"] == "CHILD_OF"), None)
              for s in spans}
    roots = [s for s in spans if parent[s["spanID"]] not in ids]
    calls = [s for s in spans if tags(s).get("otel.scope.name") == REQUESTS_SCOPE]
    answered = all(any(parent[s["spanID"]] == c["spanID"]
                       and service[s["processID"]] == KEYSTONE_SERVICE for s in spans)
                   for c in calls)
    whole = (len(ids) == len(spans) and len(roots) == 1
             and service[roots[0]["processID"]] == CLIENT_SERVICE
             and not any(s.get("warnings") for s in spans) and answered
             and any(service[s["processID"]] == "zaqar" for s in spans))
    return {"whole": whole,
            "workers": len({_worker(trace, s) for s in spans
                            if service[s["processID"]] == "zaqar"}),
            "keystone_spans": sum(service[s["processID"]] == KEYSTONE_SERVICE
                                  for s in spans),
            "keystone_calls": len(calls)}


class Stack:
    """``receiver``: where Zaqar and Keystone export (default: an
    ``OTLPReceiver`` of its own); ``keystone_receiver``: Keystone's, if
    another. ``zaqar_command`` / ``zaqar_env``: how Zaqar runs (default
    ``zaqar-otel-server``); ``otel``: ``[opentelemetry]`` options over the
    default ones, a None value removing one; ``authtoken``:
    ``[keystone_authtoken]`` options over the default ones; ``profiler``:
    keystone.conf's ``[profiler]`` options over :func:`keystone_profiler`'s."""

    def __init__(self, receiver: Any = None, keystone_receiver: Any = None,
                 zaqar_command: Sequence[str] = OTEL_SERVER,
                 zaqar_env: dict[str, str] | None = None,
                 otel: dict[str, str | None] | None = None,
                 authtoken: dict[str, str] | None = None,
                 profiler: dict[str, str] | None = None) -> None:
        self._exit = contextlib.ExitStack()
        self._receiver, self._keystone_receiver = receiver, keystone_receiver
        self.zaqar_command, self.zaqar_env = list(zaqar_command), zaqar_env
        self.otel, self.authtoken = dict(otel or {}), dict(authtoken or {})
        self.profiler = dict(profiler or {})
        self.receiver: OTLPReceiver
        self.keystone: KeystoneServer
        self.zaqar: ZaqarServer
        self.dir = Path(tempfile.mkdtemp(prefix="zaqar-otel-cli-"))
        self.client_id = str(uuid.uuid4())
        self.timings: dict[str, float] = {}

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        self.receiver = self._exit.enter_context(self._receiver or OTLPReceiver())
        self.keystone = self._exit.enter_context(KeystoneServer({
            **keystone_profiler(self._keystone_receiver or self.receiver),
            **self.profiler}))
        self.timings["keystone"] = time.monotonic() - t0
        # The service user keystonemiddleware authenticates as, and the user
        # the CLI runs as (role member, as a tenant would).
        self.service_user = self.keystone.add_user("zaqar", "service", "admin")
        self.user = self.keystone.add_user("demo", "demo", "member")
        redis = self._exit.enter_context(RedisServer())
        sections = tracing(self.receiver, profiler={"trace_requests": "true"})
        for option, value in self.otel.items():
            if value is None:
                sections["opentelemetry"].pop(option, None)
            else:
                sections["opentelemetry"][option] = value
        sections["DEFAULT"] = {"auth_strategy": "keystone"}
        sections["keystone_authtoken"] = {
            "www_authenticate_uri": self.keystone.auth_url,
            "auth_url": self.keystone.auth_url,
            "auth_type": "password",
            "username": self.service_user.user,
            "password": self.service_user.password,
            "project_name": self.service_user.project,
            "user_domain_name": DOMAIN,
            "project_domain_name": DOMAIN,
            **self.authtoken,
        }
        self.zaqar = self._exit.enter_context(
            ZaqarServer(redis_sql(redis.url), command=self.zaqar_command,
                        env=self.zaqar_env, extra=sections))
        # Catalog: service type "messaging" (what python-zaqarclient's OSC
        # plugin looks up), public/internal/admin endpoints at Zaqar's root.
        self.keystone.register_service("zaqar", "messaging", self.zaqar.url)
        self.timings["stack"] = time.monotonic() - t0

    def stop(self) -> None:
        self._exit.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def env(self) -> dict[str, str]:
        """The CLI's environment: password auth as ``demo``, the client id
        ``messaging message post`` requires."""
        return {**self.user.os_env(self.keystone.auth_url),
                "OS_MESSAGE_CLIENT_ID": self.client_id}

    def cli(self, args: Sequence[str], profile: bool = True) -> CliResult:
        return openstack(args, env=self.env, profile_key=KEY if profile else None,
                         bin_dir=openstack_bin().parent, cwd=self.dir)

    def trace(self, trace_id: int, route: str, timeout: float = 15.0,
              settle: float = 0.5) -> list[ReceivedSpan]:
        """The trace's spans once Zaqar's server span for ``route`` is in and
        every keystonemiddleware call has its Keystone span (two processes
        export on their own schedules), then ``settle`` s without news."""
        rx = self.receiver

        def complete() -> bool:
            spans = [s for s in rx.spans() if s.trace_id == trace_id]
            if not any(s.kind == "SERVER" and s.name == route for s in spans):
                return False
            parents = {s.parent_span_id for s in spans}
            return all(s.span_id in parents for s in spans
                       if s.scope == REQUESTS_SCOPE)

        deadline = time.monotonic() + timeout
        while not complete():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        count = -1
        while count != len(spans := [s for s in rx.spans() if s.trace_id == trace_id]):
            count = len(spans)
            time.sleep(settle)
        return spans


def detail(span: ReceivedSpan) -> str:
    """``render_tree`` detail: the exporting service, and HTTP status."""
    out = f"  ({span.resource.get('service.name')})"
    status = (span.attributes.get("http.response.status_code")
              or span.attributes.get("http.status_code")
              or span.attributes.get("status_code"))
    return out + (f" -> {status}" if status else "")

