"""pytest plugin loaded into each run of Zaqar's own API tests (``-p``).

The runner (``peers.zaqar_suite.run``) starts pytest in the unpacked Zaqar
sdist with this plugin and says what to do through the environment:

``ZAQAR_SUITE_MODE``
    ``plain``       Zaqar as released, nothing added (the oracle);
    ``hook_on``     ``zaqar_otel.instrument.install()``, every ``[profiler]``
                    ``trace_*`` switch on, spans exported over OTLP/HTTP to
                    ``ZAQAR_SUITE_OTLP_ENDPOINT``, signed headers on every
                    request;
    ``hook_off``    the hook installed, ``[profiler] enabled = false``, signed
                    headers on every request;
    ``osprofiler``  no hook: Zaqar's own OSProfiler support on
                    (``[profiler] enabled``, every trace switch Zaqar and
                    osprofiler have, osprofiler's driver at
                    ``ZAQAR_SUITE_OSPROFILER_CONNECTION``), signed headers on
                    every request;
    ``headers``     no hook, no profiling, signed headers on every request.
``ZAQAR_SUITE_HMAC_KEY``
    the key headers are signed with and ``[profiler] hmac_keys``.
``ZAQAR_SUITE_SET``
    more overrides for experiments, ``group.option=value`` separated by
    ``;`` (``profiler.trace_message_store=false``), applied last.
``ZAQAR_SUITE_RECORD_DIR``
    where the plugin writes what it did (``session.json``,
    ``injected.jsonl``, ``bodies.json``) for the runner's checks.

Configuration reaches Zaqar through ``zaqar.bootstrap.Bootstrap``: every
ConfigOpts a test hands to a Bootstrap gets the ``[profiler]`` and
``[opentelemetry]`` overrides of the mode just before Zaqar reads them.
Signed headers are added where the tests' clients build their requests:
``falcon.testing.create_environ`` (Zaqar's WSGI unit tests and the
functional tests' in-process WSGI client) and
``MessagingProtocol.onMessage`` (the websocket tests' request dicts). Each
header carries fresh uuids; one request in eight is sent as an OSProfiler
root (``parent_id == base_id``), the others as a child of a caller span.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

MODE = os.environ.get("ZAQAR_SUITE_MODE", "plain")
MODES = ("plain", "hook_on", "hook_off", "osprofiler", "headers")
HOOKED = MODE in ("hook_on", "hook_off")
INJECT = MODE != "plain"
KEY = os.environ.get("ZAQAR_SUITE_HMAC_KEY", "zaqar-suite-key")
RECORD_DIR = Path(os.environ.get("ZAQAR_SUITE_RECORD_DIR") or ".")
ROOT_EVERY = 8  # one request in ROOT_EVERY is an OSProfiler root caller

_lock = threading.Lock()
_current_test = "(collection)"
_count = 0
_injected: list[dict[str, Any]] = []
_secrets: set[str] = set()  # message bodies and metadata values sent
_exposed: set[str] = set()  # strings the tests also send in paths and headers
_ws_current = threading.local()


# -- configuration ---------------------------------------------------------


def _profiler_overrides() -> dict[str, dict[str, Any]]:
    on = {name: True for name in (
        "trace_wsgi_transport", "trace_message_store", "trace_management_store",
        "trace_sqlalchemy", "trace_requests")}
    if MODE == "osprofiler":
        return {"profiler": {
            "enabled": True, "hmac_keys": KEY,
            "connection_string": os.environ["ZAQAR_SUITE_OSPROFILER_CONNECTION"],
            **on}}
    if not HOOKED:
        return {}
    on.update({name: True for name in (
        "trace_redis", "trace_mongodb", "trace_pooling", "trace_message_links",
        "trace_websocket_transport")})
    otel: dict[str, Any] = {
        "exporter": "otlp_http",
        "service_name": "zaqar-suite",
        # Nothing may be dropped: the runner counts SERVER spans.
        "max_queue_size": 1_000_000,
        "schedule_delay": 200,
        "shutdown_timeout": 60.0,
    }
    if os.environ.get("ZAQAR_SUITE_OTLP_ENDPOINT"):
        otel["endpoint"] = os.environ["ZAQAR_SUITE_OTLP_ENDPOINT"]
    return {"profiler": {"enabled": MODE == "hook_on", "hmac_keys": KEY, **on},
            "opentelemetry": otel}


def _configure(conf: Any) -> None:
    from osprofiler import opts as osprofiler_opts
    from zaqar.conf import profiler as zaqar_profiler

    overrides = _profiler_overrides()
    if not overrides:
        return
    osprofiler_opts.set_defaults(conf)
    conf.register_opts(zaqar_profiler.ALL_OPTS, group=zaqar_profiler.GROUP_NAME)
    if HOOKED:
        from zaqar_otel import opts

        opts.register_opts(conf)
    for group, values in overrides.items():
        for name, value in values.items():
            conf.set_override(name, value, group=group)
    for item in filter(None, os.environ.get("ZAQAR_SUITE_SET", "").split(";")):
        option, _, value = item.partition("=")
        group, _, name = option.strip().rpartition(".")
        conf.set_override(name, value.strip(), group=group or None)


def _patch_bootstrap() -> None:
    from zaqar import bootstrap

    original = bootstrap.Bootstrap.__init__

    @functools.wraps(original)
    def __init__(self: Any, conf: Any, *args: Any, **kwargs: Any) -> None:
        _configure(conf)
        original(self, conf, *args, **kwargs)

    bootstrap.Bootstrap.__init__ = __init__


# -- signed headers on every request ----------------------------------------


def _signed(via: str) -> tuple[dict[str, str], dict[str, Any]]:
    from zaqar_otel.propagation import codec  # pure: imports nothing of Zaqar

    global _count
    with _lock:
        _count += 1
        root = _count % ROOT_EVERY == 0
    base_id = str(uuid.uuid4())
    parent_id = base_id if root else str(uuid.uuid4())
    record = {"base_id": base_id, "parent_id": parent_id, "via": via,
              "test": _current_test}
    with _lock:
        _injected.append(record)
    return codec.encode(base_id, parent_id, KEY), record


def _remember_sent(path: str, headers: Any) -> None:
    with _lock:
        _exposed.update(seg for seg in path.split("/") if seg)
        if isinstance(headers, dict):
            _exposed.update(str(v) for v in headers.values())


_QUEUE_PATH = re.compile(r"/queues/[^/]+/?$")


def _leaves(value: Any) -> list[str]:
    """String values inside (not keys: those are Zaqar's and the tests'
    vocabulary, 'status', '_flavor', which span attributes also use)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _leaves(v)]
    return []


def _message_bodies(value: Any) -> list[str]:
    """String values of every ``body`` and ``metadata`` inside, and each
    such document as JSON."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("body", "metadata"):
                found += _leaves(v)
                if isinstance(v, (dict, list)) and v:
                    found.append(json.dumps(v))
            else:
                found += _message_bodies(v)
    elif isinstance(value, list):
        for v in value:
            found += _message_bodies(v)
    return found


def _remember_body(method: str, path: str, body: Any) -> None:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return
    try:
        doc = json.loads(body)
    except ValueError:
        return
    found = _message_bodies(doc)
    if len(body) >= 16:
        found.append(body)  # the request document as sent
    if method in ("PUT", "PATCH") and _QUEUE_PATH.search(path):
        # Queue metadata: the whole document (a JSON patch's values).
        found += _leaves(doc)
    with _lock:
        _secrets.update(found)


def _patch_wsgi_clients() -> None:
    from falcon import testing

    original = testing.create_environ

    @functools.wraps(original)
    def create_environ(*args: Any, **kwargs: Any) -> dict[str, Any]:
        environ = original(*args, **kwargs)
        headers, _ = _signed("wsgi")
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        path = environ.get("PATH_INFO", "")
        _remember_sent(path + "/" + environ.get("QUERY_STRING", ""),
                       kwargs.get("headers"))
        _remember_body(environ.get("REQUEST_METHOD", ""), path, kwargs.get("body"))
        return environ

    testing.create_environ = create_environ


def _patch_websocket() -> None:
    import msgpack
    from oslo_serialization import jsonutils
    from zaqar.api import handler
    from zaqar.transport.websocket import protocol

    def injecting(original: Any) -> Any:
        """``onMessage`` with a signed header added to each request dict."""

        @functools.wraps(original)
        def onMessage(self: Any, payload: Any, isBinary: bool) -> Any:  # noqa: N802,N803
            return _inject_and_call(original, self, payload, isBinary)

        return onMessage

    def _inject_and_call(original: Any, self: Any, payload: Any,
                         isBinary: bool) -> Any:  # noqa: N803
        try:
            if isBinary:
                request = msgpack.unpackb(payload)
            else:
                text = payload.decode() if isinstance(payload, bytes) else payload
                request = jsonutils.loads(text)
        except Exception:
            request = None
        if not (isinstance(request, dict) and isinstance(request.get("headers"), dict)):
            # A malformed request stays exactly as the test wrote it.
            return original(self, payload, isBinary)
        headers, record = _signed("websocket")
        record["action"] = str(request.get("action"))
        record["reached_handler"] = False
        _remember_sent("", request["headers"])
        body = request.get("body")
        if isinstance(body, dict):
            with _lock:
                _secrets.update(_message_bodies(body))
                if request.get("action") in ("queue_create", "queue_update"):
                    _secrets.update(_leaves(body.get("metadata")))
        request["headers"] = {**request["headers"], **headers}
        if isBinary:
            payload = msgpack.packb(request)
        else:
            text = jsonutils.dumps(request)
            payload = text.encode() if isinstance(payload, bytes) else text
        _ws_current.record = record
        try:
            return original(self, payload, isBinary)
        finally:
            _ws_current.record = None

    if MODE == "hook_on":
        # zaqar-otel's websocket entry wraps onMessage when it is set up: the
        # header must be in the payload before it looks, as a client sends
        # it, so this wrapper goes outside zaqar-otel's, once that exists.
        from zaqar_otel.entry import websocket as otel_websocket

        instrument_handler = otel_websocket.instrument_handler

        @functools.wraps(instrument_handler)
        def then_inject(entry: Any, *args: Any, **kwargs: Any) -> None:
            instrument_handler(entry, *args, **kwargs)
            current = protocol.MessagingProtocol.onMessage
            if not getattr(current, "_zaqar_suite_injects", False):
                protocol.MessagingProtocol.onMessage = injecting(current)
                protocol.MessagingProtocol.onMessage._zaqar_suite_injects = True

        otel_websocket.instrument_handler = then_inject
    else:
        protocol.MessagingProtocol.onMessage = injecting(
            protocol.MessagingProtocol.onMessage)

    # Inside zaqar-otel's own wrapper (set up later, around this one): tells
    # which websocket requests reached the API handler, where spans start.
    process_request = handler.Handler.process_request

    @functools.wraps(process_request)
    def reached(self: Any, req: Any, proto: Any) -> Any:
        record = getattr(_ws_current, "record", None)
        if record is not None:
            record["reached_handler"] = True
        return process_request(self, req, proto)

    handler.Handler.process_request = reached


# -- pytest hooks ------------------------------------------------------------


def pytest_configure(config: Any) -> None:
    if MODE not in MODES:
        raise SystemExit(f"ZAQAR_SUITE_MODE={MODE!r}: expected one of {MODES}")
    import zaqar

    # Under pytest (unlike stestr's import order) nothing imports the
    # websocket package before test_protocol.py needs it as an attribute.
    import zaqar.transport.websocket.factory  # noqa: F401

    if HOOKED:
        from zaqar_otel import instrument

        instrument.install()
    _patch_bootstrap()
    if INJECT:
        _patch_wsgi_clients()
        _patch_websocket()
    from importlib import metadata

    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    (RECORD_DIR / "session.json").write_text(json.dumps({
        "mode": MODE,
        "zaqar_file": zaqar.__file__,
        "zaqar_version": metadata.version("zaqar"),
        "cwd": os.getcwd(),
        "overrides": _profiler_overrides(),
        "set": os.environ.get("ZAQAR_SUITE_SET", ""),
    }, indent=2, default=str))


def pytest_runtest_setup(item: Any) -> None:
    global _current_test
    _current_test = item.nodeid


def pytest_runtest_teardown(item: Any) -> None:
    global _current_test
    _current_test = item.nodeid + "(teardown)"


def pytest_unconfigure(config: Any) -> None:
    flushed = None
    if HOOKED:
        from zaqar_otel import instrument

        flushed = instrument.shutdown(timeout=60.0)
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    with open(RECORD_DIR / "injected.jsonl", "w") as out:
        for record in _injected:
            out.write(json.dumps(record) + "\n")
    secrets = sorted(s for s in _secrets if len(s) >= 5 and s not in _exposed)
    (RECORD_DIR / "bodies.json").write_text(json.dumps(
        {"secrets": secrets, "flushed": flushed}, indent=1))
