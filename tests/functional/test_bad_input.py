"""Bad trace headers and broken tracing configuration against a real Zaqar.

Invariant 6 (never break a request) and 3 (trust): whatever a client puts in
``X-Trace-Info`` / ``X-Trace-HMAC`` / ``traceparent`` / ``tracestate``, the
answer is what Zaqar gives without them, and only a valid signature starts a
trace. A configuration that cannot work is one ERROR naming the option, and
Zaqar serves, untraced.

The fuzz runs ``ZAQAR_OTEL_FUZZ_EXAMPLES`` examples (200 by default; the
``stress`` tox env runs 10000 through ``tests/stress/test_fuzz_long.py``)
against one ``zaqar-otel-server`` started once for the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.tracing import KEY, OTEL_SERVER, canary, tracing
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
from zaqar_otel.demo.tree import render_tree
from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql
from zaqar_otel.propagation import codec, idmap

pytestmark = pytest.mark.functional


FUZZ_EXAMPLES = int(os.environ.get("ZAQAR_OTEL_FUZZ_EXAMPLES", "200"))
QUEUE = "fuzzed"
STATS = f"/v2/queues/{QUEUE}/stats"
# wsgiref reads header lines of up to 64 KiB; values stay well below.
MAX_VALUE = 16 * 1024


# -- strategies ------------------------------------------------------------------

# Any latin-1 character http.client sends as a header value: all but CR and LF
# (it refuses those), control characters and non-ASCII included.
_LATIN1 = st.characters(codec="latin-1", exclude_characters="\r\n")
_text = st.text(_LATIN1, max_size=64)
_binaryish = st.binary(max_size=96).map(
    lambda b: b.decode("latin-1").replace("\r", " ").replace("\n", " "))
_uuid = st.uuids().map(str)
# Never parses as a uuid: uuid.UUID wants 32 hex digits once "urn:uuid:",
# braces and dashes are removed.
_not_uuid = _text.map(lambda s: "x" + s)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | _text | _uuid,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_wrong_key = st.sampled_from(["trace_id", "span_id", "baseid", "Base_Id", "id",
                              "parent", "hmac", ""]) | st.text(max_size=12).filter(
    lambda k: k not in ("base_id", "parent_id"))
# Payloads shaped like osprofiler's that a valid signature must still not
# make a parent of: an extra key, a non-uuid id, a non-object, no base_id.
_wrong_payload = st.one_of(
    st.builds(lambda ids, extra: {**ids, **extra},
              st.fixed_dictionaries({"base_id": _uuid}, optional={"parent_id": _uuid}),
              st.dictionaries(_wrong_key, _json_value, min_size=1, max_size=3)),
    st.fixed_dictionaries({"base_id": _not_uuid | st.integers() | st.none()},
                          optional={"parent_id": _uuid}),
    st.fixed_dictionaries({"base_id": _uuid, "parent_id": _not_uuid | st.integers()}),
    st.fixed_dictionaries({}, optional={"parent_id": _uuid}),
    st.lists(_uuid, max_size=2),
    _json_value.filter(lambda v: not isinstance(v, dict)),
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _sign(info: str, key: str) -> str:
    """X-Trace-HMAC of ``info`` as osprofiler computes it."""
    return hmac.new(key.encode(), info.encode("latin-1"), hashlib.sha1).hexdigest()


@st.composite
def _trace_info(draw: st.DrawFn) -> tuple[str, str | None]:
    """An (X-Trace-Info, X-Trace-HMAC) pair that must not verify or decode."""
    kind = draw(st.sampled_from(
        ["junk", "b64-junk", "wrong-payload", "wrong-key", "wrong-hmac",
         "huge", "huge-signed", "no-hmac"]))
    if kind == "junk":
        return draw(_text | _binaryish), draw(st.none() | _text | _binaryish)
    if kind == "b64-junk":
        info = _b64(draw(st.binary(max_size=128)))
        return info, draw(st.sampled_from([_sign(info, KEY), "0" * 40]) | _text)
    if kind == "wrong-payload":
        info = _b64(json.dumps(draw(_wrong_payload)).encode())
        return info, _sign(info, KEY)  # validly signed, still not a parent
    if kind == "wrong-key":
        other = draw(st.text(min_size=1, max_size=16).filter(
            lambda k: k.strip() and k != KEY))
        headers = codec.encode(draw(_uuid), draw(_uuid), other)
        return headers[codec.X_TRACE_INFO], headers[codec.X_TRACE_HMAC]
    if kind == "wrong-hmac":
        headers = codec.encode(draw(_uuid), draw(_uuid), KEY)
        good = headers[codec.X_TRACE_HMAC]
        bad = draw(st.sampled_from([
            good.upper(), good[:-1], good + "0", good[::-1], "0" * 40,
            good[:39] + ("0" if good[39] != "0" else "1")]))
        return headers[codec.X_TRACE_INFO], bad
    if kind in ("huge", "huge-signed"):
        size = draw(st.integers(codec.MAX_HEADER_BYTES + 1, MAX_VALUE))
        if kind == "huge":
            seed = draw(st.integers(0, 2**32))
            info = _b64(random.Random(seed).randbytes(size))[:size]
            return info, draw(st.none() | _text)
        info = padded_trace_info(str(uuid.uuid4()), str(uuid.uuid4()), size)
        return info, _sign(info, KEY)  # valid but over the cap
    return draw(_text | _binaryish), None


def _traceparent(trace_id: int | None = None) -> st.SearchStrategy[str]:
    well_formed = st.builds(
        lambda version, tid, sid, flags: f"{version}-{tid:032x}-{sid:016x}-{flags}",
        st.sampled_from(["00", "01", "ff", "cc"]),
        st.just(trace_id) if trace_id else st.integers(0, 2**128 - 1),
        st.integers(0, 2**64 - 1),
        st.sampled_from(["00", "01", "03", "ff", "0x"]))
    return well_formed | _text | _binaryish


_tracestate = (
    st.lists(st.builds(lambda k, v: f"{k}={v}", st.text(_LATIN1, max_size=10), _text),
             max_size=40).map(",".join)
    | _text | _binaryish
    | st.integers(1, MAX_VALUE).map(lambda n: ("k=v," * n)[:n])
)


def _name(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper()])


@dataclass
class Fuzzed:
    """One example: headers, and the trace id if it carries a valid signature."""

    headers: dict[str, str]
    signed_trace_id: int | None = None
    caller_span_id: int | None = None


@st.composite
def fuzzed_headers(draw: st.DrawFn) -> Fuzzed:
    """Fuzzed trace headers, and sometimes a valid signature beside them.

    With a valid signature only traceparent / tracestate are fuzzed: the
    request must be traced, with the caller's parent, and answered as usual.
    """
    headers: dict[str, str] = {}
    signed = draw(st.integers(0, 9)) == 0
    trace_id = caller = None
    if signed:
        base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
        headers.update(codec.encode(base_id, parent_id, KEY))
        trace_id = idmap.trace_id_from_base_id(base_id)
        caller = idmap.span_id_from_uuid(parent_id)
    else:
        if draw(st.booleans()):
            info, signature = draw(_trace_info())
            headers[draw(_name(codec.X_TRACE_INFO))] = info
            if signature is not None:
                headers[draw(_name(codec.X_TRACE_HMAC))] = signature
        elif draw(st.booleans()):
            headers[draw(_name(codec.X_TRACE_HMAC))] = draw(_text | _binaryish)
    if draw(st.booleans()):
        same = st.just(trace_id) if trace_id and draw(st.booleans()) else st.none()
        headers[draw(_name("traceparent"))] = draw(_traceparent(draw(same)))
    if draw(st.booleans()):
        headers[draw(_name("tracestate"))] = draw(_tracestate)
    return Fuzzed(headers, trace_id, caller)


_ID = re.compile(r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


def _named_ids(headers: dict[str, str]) -> frozenset[int]:
    """Every uuid / 128-bit hex id in the values, also inside base64 JSON."""
    texts = list(headers.values())
    for value in headers.values():
        try:
            texts.append(base64.urlsafe_b64decode(value.strip() + "==").decode())
        except (ValueError, UnicodeDecodeError):
            pass
    return frozenset(int(m.replace("-", ""), 16)
                     for text in texts for m in _ID.findall(text))


def padded_trace_info(base_id: str, parent_id: str, size: int) -> str:
    """A valid X-Trace-Info of ``size`` bytes (or up to 3 more): JSON padded
    with spaces, which json.loads skips."""
    text = f'{{"base_id": "{base_id}", "parent_id": "{parent_id}"}}'
    pad = max(0, -(-size // 4) * 3 - len(text))
    return _b64(("{" + " " * pad + text[1:]).encode())


# -- the server the fuzz runs against ----------------------------------------------


@dataclass
class Target:
    server: ZaqarServer
    receiver: OTLPReceiver
    reference: tuple[int, Any]
    # Trace id of each validly signed example -> its caller's span id.
    expected_traces: dict[int, int] = field(default_factory=dict)
    examples: int = 0
    # The trace ids each example's headers name, and the headers (cut short).
    sent: list[tuple[frozenset[int], str]] = field(default_factory=list)

    def check(self, fuzzed: Fuzzed) -> None:
        """The request with ``fuzzed`` headers is answered as without them."""
        # ZaqarServer.request opens a fresh connection each time: one bad
        # header cannot spoil the next example.
        status, _, body = self.server.request("GET", STATS, headers=fuzzed.headers)
        self.examples += 1
        self.sent.append((_named_ids(fuzzed.headers), repr(fuzzed.headers)[:500]))
        assert status < 500, (status, body, fuzzed.headers)
        assert (status, body) == self.reference, fuzzed.headers
        if fuzzed.signed_trace_id is not None:
            assert fuzzed.caller_span_id is not None
            self.expected_traces[fuzzed.signed_trace_id] = fuzzed.caller_span_id

    def _culprits(self, spans: list[ReceivedSpan]) -> str:
        """The headers sent that name one of the unexpected traces."""
        wanted = {s.trace_id for s in spans}
        found = [text for ids, text in self.sent if ids & wanted]
        return "sent with these headers:\n" + "\n".join(found or ["(none found)"])

    def assert_only_expected_traces(self) -> list[ReceivedSpan]:
        """Flush with a signed canary, then: no trace but the signed ones."""
        headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
        canary_id = codec.decode(headers[codec.X_TRACE_INFO],
                                  headers[codec.X_TRACE_HMAC], [KEY]).trace_id
        assert self.server.request("GET", "/v2/queues", headers=headers)[0] == 200
        # Spans are exported in the order they ended: once the canary's server
        # span is here, so is every span of the requests before it.
        self.receiver.wait_for(
            lambda s: s.trace_id == canary_id and s.kind == "SERVER", timeout=30)
        spans = self.receiver.spans()
        allowed = {*self.expected_traces, canary_id}
        unexpected = [s for s in spans if s.trace_id not in allowed]
        assert not unexpected, render_tree(unexpected) + "\n" + self._culprits(
            unexpected)
        servers = {s.trace_id: s for s in spans if s.kind == "SERVER"}
        assert set(self.expected_traces) <= set(servers), "a signed request was lost"
        for trace_id, caller in self.expected_traces.items():
            # Under the caller the signature names, whatever traceparent said.
            root = servers[trace_id]
            assert root.parent_span_id == caller, root
            assert root.attributes["zaqar_otel.trace_origin"] == "osprofiler"
        return spans


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with RedisServer() as redis_server, OTLPReceiver() as rx:
        with ZaqarServer(redis_sql(redis_server.url), command=OTEL_SERVER,
                         extra=tracing(rx)) as server:
            assert server.request("PUT", f"/v2/queues/{QUEUE}")[0] == 201
            status, _, body = server.request("GET", STATS)
            assert status == 200, body
            canary(server, rx)  # clears what the set-up exported
            yield Target(server, rx, (status, body))
            log = server.log_text()
    assert "Traceback" not in log, log[-5000:]


def fuzz(target: Target, examples: int) -> None:
    """Run the header fuzz with ``examples`` examples, then check the exports."""
    target.receiver.clear()
    target.expected_traces.clear()
    status, _, body = target.server.request("GET", STATS)
    assert status == 200, body
    target.reference = (status, body)

    @settings(max_examples=examples, deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(fuzzed_headers())
    def run(fuzzed: Fuzzed) -> None:
        target.check(fuzzed)

    run()
    target.assert_only_expected_traces()


def test_fuzzed_trace_headers_never_change_the_answer(target: Target) -> None:
    fuzz(target, FUZZ_EXAMPLES)
    assert target.examples >= min(FUZZ_EXAMPLES, 50)


def test_oversized_signed_header_is_not_traced(target: Target) -> None:
    target.receiver.clear()
    target.expected_traces.clear()
    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    # Control: the same padded payload under the cap verifies and is traced,
    # so the big one below is refused for its size alone.
    small = padded_trace_info(base_id, parent_id, codec.MAX_HEADER_BYTES - 100)
    assert len(small) <= codec.MAX_HEADER_BYTES
    traced = codec.decode(small, _sign(small, KEY), [KEY])
    assert traced is not None and traced.trace_id == uuid.UUID(base_id).int
    target.check(Fuzzed({codec.X_TRACE_INFO: small,
                         codec.X_TRACE_HMAC: _sign(small, KEY)},
                        traced.trace_id, traced.span_id))

    other_base = str(uuid.uuid4())
    big = padded_trace_info(other_base, parent_id, 10 * 1024)
    assert len(big) >= 10 * 1024
    target.check(Fuzzed({codec.X_TRACE_INFO: big,
                         codec.X_TRACE_HMAC: _sign(big, KEY)}))
    spans = target.assert_only_expected_traces()
    assert uuid.UUID(other_base).int not in {s.trace_id for s in spans}
    assert uuid.UUID(base_id).int in {s.trace_id for s in spans}


# -- broken configuration -----------------------------------------------------------


BROKEN = [
    pytest.param("opentelemetry", "exporter", "jaeger", id="unknown-exporter"),
    pytest.param("opentelemetry", "endpoint", "not a url", id="endpoint-not-a-url"),
    pytest.param("opentelemetry", "endpoint", "ftp://x", id="endpoint-ftp"),
    pytest.param("opentelemetry", "sample_ratio", "-0.5", id="negative-ratio"),
    pytest.param("profiler", "hmac_keys", "", id="empty-hmac-keys"),
]
_ERROR_LINE = re.compile(r"^\S+ \S+ \d+ ERROR ", re.MULTILINE)


@pytest.mark.parametrize(("section", "option", "value"), BROKEN)
def test_broken_configuration_is_one_error_and_zaqar_serves_untraced(
    section: str, option: str, value: str,
    redis: RedisServer, receiver: OTLPReceiver,
) -> None:
    extra = tracing(receiver)
    extra[section][option] = value
    # ZaqarServer waits for GET /v2/ping: a crash at start fails here.
    with ZaqarServer(redis_sql(redis.url), command=OTEL_SERVER, extra=extra) as server:
        headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
        assert server.request("PUT", "/v2/queues/broken", headers=headers)[0] == 201
        status, _, body = server.request("GET", "/v2/queues", headers=headers)
        time.sleep(0.5)  # ten export intervals, had an exporter been set up
        log = server.log_text()
    assert status == 200 and body["queues"][0]["name"] == "broken"
    errors = [line for line in log.splitlines() if _ERROR_LINE.match(line)]
    assert len(errors) == 1, log
    assert f"[{section}] {option}" in errors[0], errors[0]
    assert "Traceback" not in log, log
    assert receiver.requests == 0 and receiver.spans() == []
