"""The OSProfiler header codec, the id mapping and the propagator."""

import base64
import json
import logging
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

from zaqar_otel.propagation import codec, idmap, propagator

KEY = "s3cr3t"
uuids = st.uuids().map(str)
# Printable keys: HMAC zero-pads keys, so "k" and "k\0" would sign alike.
keys = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF,
                             exclude_characters=","), min_size=1, max_size=40)
trace_ids = st.integers(min_value=1, max_value=(1 << 128) - 1)
span_ids = st.integers(min_value=1, max_value=(1 << 64) - 1)


def signed(payload: object, key: str = KEY, raw: bytes | None = None) -> dict:
    """Headers signed like osprofiler's signed_pack, for any payload."""
    data = raw if raw is not None else json.dumps(payload).encode()
    info = base64.urlsafe_b64encode(data)
    signature = codec._sign(key, info).hex()
    return {"X-Trace-Info": info.decode(), "X-Trace-HMAC": signature}


def span_context_of(ctx: Context) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def sampled_context(trace_id: int, span_id: int) -> Context:
    sc = trace.SpanContext(
        trace_id, span_id, is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(sc))


# -- id mapping ---------------------------------------------------------------


@given(trace_ids, span_ids)
def test_span_uuid_round_trips_span_id_and_keeps_trace_high_bits(t, s):
    span_uuid = idmap.uuid_from_span_id(t, s)
    assert idmap.span_id_from_uuid(span_uuid) == s
    assert uuid.UUID(span_uuid).int >> 64 == t >> 64


@given(trace_ids)
def test_trace_id_round_trips_through_base_id(t):
    assert idmap.trace_id_from_base_id(idmap.base_id_from_trace_id(t)) == t


@given(st.uuids())
def test_osprofiler_root_maps_back_to_its_base_id(u):
    # A caller at the root of its trace sends parent_id == base_id.
    t = idmap.trace_id_from_base_id(str(u))
    s = idmap.span_id_from_uuid(str(u))
    assert idmap.uuid_from_span_id(t, s) == str(u)


# -- codec --------------------------------------------------------------------


@given(uuids, uuids, keys)
def test_encode_then_decode_gives_the_ids_and_key(base_id, parent_id, key):
    headers = codec.encode(base_id, parent_id, key)
    info = codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                         ["other", key])
    assert info == codec.TraceInfo(base_id, parent_id, key)


@given(uuids, uuids, keys, keys)
def test_a_signature_under_another_key_is_refused(base_id, parent_id, k1, k2):
    headers = codec.encode(base_id, parent_id, k1)
    expected = None if k1 != k2 else codec.TraceInfo(base_id, parent_id, k1)
    assert codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                         [k2]) == expected


@given(uuids, uuids, st.data())
def test_any_tampered_character_is_refused(base_id, parent_id, data):
    headers = codec.encode(base_id, parent_id, KEY)
    info = headers["X-Trace-Info"]
    i = data.draw(st.integers(0, len(info) - 1))
    c = data.draw(st.sampled_from("AQgw-_09"))
    tampered = info[:i] + c + info[i + 1:]
    result = codec.decode(tampered, headers["X-Trace-HMAC"], [KEY])
    assert result is None or tampered == info


@settings(max_examples=500)
@given(st.one_of(st.none(), st.text(), st.binary()),
       st.one_of(st.none(), st.text(), st.binary()))
def test_garbage_headers_never_raise(info, sig):
    assert codec.decode(info, sig, [KEY]) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | uuids,
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


@settings(max_examples=500)
@given(st.dictionaries(st.sampled_from(["base_id", "parent_id", "hmac_key", "x"]),
                       json_values) | json_values)
def test_validly_signed_payloads_of_the_wrong_shape_are_refused(payload):
    headers = signed(payload)
    info = codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"], [KEY])
    good_shape = (
        isinstance(payload, dict)
        and set(payload) <= {"base_id", "parent_id"}
        and "base_id" in payload
        and isinstance(payload["base_id"], str)
        # osprofiler reads a falsy parent_id as "the root": parent = base.
        and (isinstance(payload.get("parent_id"), str) or not payload.get("parent_id"))
    )
    if info is not None:
        assert good_shape
        uuid.UUID(info.base_id), uuid.UUID(info.parent_id)


@pytest.mark.parametrize("payload", [
    {"base_id": "not-a-uuid"},
    {"base_id": str(uuid.uuid4()), "parent_id": 42},
    {"base_id": str(uuid.uuid4()), "parent_id": str(uuid.uuid4()), "x": 1},
    {"parent_id": str(uuid.uuid4())},
    [str(uuid.uuid4())],
])
def test_signed_but_malformed_payloads_are_refused(payload):
    headers = signed(payload)
    assert codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                         [KEY]) is None


def test_signed_non_json_and_empty_hmac_are_refused():
    headers = signed(None, raw=b"\xff\xfe not json")
    assert codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"],
                         [KEY]) is None
    good = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    assert codec.decode(good["X-Trace-Info"], "", [KEY]) is None
    assert codec.decode(good["X-Trace-Info"], "  ", [KEY]) is None
    assert codec.decode(good["X-Trace-Info"], "é" * 40, [KEY]) is None
    assert codec.decode(good["X-Trace-Info"], good["X-Trace-HMAC"], []) is None


@given(uuids, uuids)
def test_any_json_spelling_of_the_payload_decodes_alike(base_id, parent_id):
    spellings = [
        json.dumps({"parent_id": parent_id, "base_id": base_id}),
        json.dumps({"base_id": base_id, "parent_id": parent_id}, indent=1),
        json.dumps({"base_id": base_id.upper(), "parent_id": parent_id}),
    ]
    for text in spellings:
        headers = signed(None, raw=text.encode())
        info = codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"], [KEY])
        assert info.trace_id == uuid.UUID(base_id).int
        assert info.span_id == uuid.UUID(parent_id).int & ((1 << 64) - 1)


def test_missing_parent_id_means_the_root():
    base_id = str(uuid.uuid4())
    headers = signed({"base_id": base_id})
    info = codec.decode(headers["X-Trace-Info"], headers["X-Trace-HMAC"], [KEY])
    assert info == codec.TraceInfo(base_id, base_id, KEY)


def test_headers_over_the_cap_are_ignored_even_when_signed():
    base_id = str(uuid.uuid4())
    # JSON allows padding with whitespace: the same ids, a bigger header.
    small = signed(None, raw=f'{{"base_id": "{base_id}"{" " * 100}}}'.encode())
    big = signed(None, raw=f'{{"base_id": "{base_id}"{" " * 4000}}}'.encode())
    assert len(big["X-Trace-Info"]) > codec.MAX_HEADER_BYTES
    assert codec.decode(small["X-Trace-Info"], small["X-Trace-HMAC"], [KEY])
    assert codec.decode(big["X-Trace-Info"], big["X-Trace-HMAC"], [KEY]) is None


# -- propagator ---------------------------------------------------------------


def test_extract_gives_a_remote_sampled_parent_only_for_a_valid_signature():
    prop = propagator.OSProfilerPropagator([KEY])
    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    sc = span_context_of(prop.extract(codec.encode(base_id, parent_id, KEY)))
    assert sc.is_remote and sc.trace_flags.sampled
    assert sc.trace_id == uuid.UUID(base_id).int
    assert sc.span_id == uuid.UUID(parent_id).int & ((1 << 64) - 1)
    forged = codec.encode(base_id, parent_id, "guess")
    assert not span_context_of(prop.extract(forged)).is_valid


@given(st.dictionaries(st.sampled_from(
    ["X-Trace-Info", "x-trace-info", "X-Trace-HMAC", "x-trace-hmac",
     "traceparent", "tracestate"]), st.text(max_size=300)))
def test_extract_of_garbage_carriers_never_raises_nor_trusts(carrier):
    composite = CompositePropagator(
        [TraceContextTextMapPropagator(), propagator.OSProfilerPropagator([KEY])])
    sc = span_context_of(composite.extract(carrier))
    # Unsigned input can only come through as a W3C parent, never as ours.
    assert not sc.is_valid or "traceparent" in carrier


def test_round_trip_gives_back_the_exact_header_strings():
    prop = propagator.OSProfilerPropagator(["new", KEY])
    for parent in (None, str(uuid.uuid4())):
        base_id = str(uuid.uuid4())
        headers = codec.encode(base_id, parent or base_id, KEY)
        out: dict = {}
        prop.inject(out, prop.extract(headers))
        assert out == headers


def test_inject_signs_with_the_verifying_key_else_the_first():
    prop = propagator.OSProfilerPropagator(["new", "old"])
    inbound = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "old")
    out: dict = {}
    prop.inject(out, prop.extract(inbound))
    assert codec.decode(out["X-Trace-Info"], out["X-Trace-HMAC"], ["old"])
    out = {}
    prop.inject(out, sampled_context(7 << 80 | 5, 9))
    info = codec.decode(out["X-Trace-Info"], out["X-Trace-HMAC"], ["new"])
    assert info.trace_id == 7 << 80 | 5 and info.span_id == 9


def test_inject_of_a_child_span_names_the_child():
    prop = propagator.OSProfilerPropagator([KEY])
    ctx = prop.extract(codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY))
    parent = span_context_of(ctx)
    child = trace.SpanContext(parent.trace_id, 0xABCDEF, is_remote=False,
                              trace_flags=parent.trace_flags)
    out: dict = {}
    prop.inject(out, trace.set_span_in_context(trace.NonRecordingSpan(child), ctx))
    info = codec.decode(out["X-Trace-Info"], out["X-Trace-HMAC"], [KEY])
    assert info.trace_id == parent.trace_id and info.span_id == 0xABCDEF


def test_unsampled_or_absent_spans_inject_nothing():
    prop = propagator.OSProfilerPropagator([KEY])
    unsampled = trace.SpanContext(1 << 100, 3, is_remote=False)
    out: dict = {}
    prop.inject(out, trace.set_span_in_context(trace.NonRecordingSpan(unsampled)))
    prop.inject(out, Context())
    assert out == {}


def test_no_keys_means_no_extract_and_no_inject(monkeypatch):
    monkeypatch.delenv(codec.HMAC_KEYS_ENV, raising=False)
    prop = propagator.OSProfilerPropagator()
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    assert not span_context_of(prop.extract(headers)).is_valid
    out: dict = {}
    prop.inject(out, sampled_context(1 << 90, 1))
    assert out == {}


def test_keys_come_from_the_environment_or_a_callable(monkeypatch):
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    monkeypatch.setenv(codec.HMAC_KEYS_ENV, f"first, {KEY}")
    assert span_context_of(propagator.OSProfilerPropagator().extract(headers)).is_valid
    rotating = [["a"]]
    prop = propagator.OSProfilerPropagator(lambda: rotating[0])
    assert not span_context_of(prop.extract(headers)).is_valid
    rotating[0] = ["a", KEY]
    assert span_context_of(prop.extract(headers)).is_valid


@pytest.mark.parametrize("name", ["X-TRACE-INFO", "x-trace-info", "X-Trace-Info"])
def test_header_names_are_case_insensitive(name):
    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    carrier = {name: headers["X-Trace-Info"],
               name.replace("INFO", "HMAC").replace("info", "hmac")
               .replace("Info", "HMAC"): headers["X-Trace-HMAC"]}
    ctx = propagator.OSProfilerPropagator([KEY]).extract(carrier)
    assert span_context_of(ctx).is_valid


def test_wsgi_environ_carrier():
    from opentelemetry.instrumentation.wsgi import wsgi_getter

    headers = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), KEY)
    environ = {"HTTP_X_TRACE_INFO": headers["X-Trace-Info"],
               "HTTP_X_TRACE_HMAC": headers["X-Trace-HMAC"]}
    ctx = propagator.OSProfilerPropagator([KEY]).extract(environ, getter=wsgi_getter)
    assert span_context_of(ctx).is_valid


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def both_families(base_id: str) -> dict:
    headers = codec.encode(base_id, str(uuid.uuid4()), KEY)
    headers.update(traceparent=TRACEPARENT, tracestate="vendor=1")
    return headers


@pytest.mark.parametrize("order", ["w3c_first", "osprofiler_first"])
def test_a_verified_osprofiler_header_wins_over_traceparent(order):
    ours = propagator.OSProfilerPropagator([KEY])
    props = [TraceContextTextMapPropagator(), ours]
    if order == "osprofiler_first":
        props.reverse()
    composite = CompositePropagator(props)
    base_id = str(uuid.uuid4())
    sc = span_context_of(composite.extract(both_families(base_id)))
    if order == "w3c_first":
        # Documented order (tracecontext, baggage, osprofiler): signed wins.
        assert sc.trace_id == uuid.UUID(base_id).int
    else:
        # The last propagator wins in a composite; so ours goes last.
        assert sc.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)


def test_tracestate_is_kept_when_both_name_the_same_trace():
    composite = CompositePropagator(
        [TraceContextTextMapPropagator(), propagator.OSProfilerPropagator([KEY])])
    base_id = str(uuid.UUID("0af7651916cd43dd8448eb211c80319c"))
    sc = span_context_of(composite.extract(both_families(base_id)))
    assert sc.trace_state.get("vendor") == "1"
    other = span_context_of(composite.extract(both_families(str(uuid.uuid4()))))
    assert other.trace_state.get("vendor") is None


def test_bad_headers_log_once_per_kind_not_a_flood(caplog):
    prop = propagator.OSProfilerPropagator([KEY])
    forged = codec.encode(str(uuid.uuid4()), str(uuid.uuid4()), "guess")
    with caplog.at_level(logging.DEBUG, logger=codec.__name__):
        for _ in range(1000):
            prop.extract(forged)
            prop.extract({"X-Trace-Info": "%%%", "X-Trace-HMAC": "zz"})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert any("matches no configured key" in m for m in messages)


# -- the bridge's face ------------------------------------------------------------


def test_the_bridge_module_is_the_api_of_the_three_parts() -> None:
    """zaqar_otel.bridge names the propagator, the id mapping and the codec;
    what it documents works through it alone, without the SDK."""
    import subprocess
    import sys

    from zaqar_otel import OSProfilerPropagator, bridge

    assert bridge.OSProfilerPropagator is OSProfilerPropagator
    assert all(hasattr(bridge, name) for name in bridge.__all__)
    assert bridge.decode is codec.decode and bridge.encode is codec.encode
    assert bridge.trace_id_from_base_id is idmap.trace_id_from_base_id
    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = bridge.encode(base_id, parent_id, KEY)
    info = bridge.decode(headers[bridge.X_TRACE_INFO], headers[bridge.X_TRACE_HMAC],
                         [KEY])
    assert info is not None
    assert info.trace_id == bridge.trace_id_from_base_id(base_id)
    assert bridge.uuid_from_span_id(info.trace_id, info.span_id)[19:] == parent_id[19:]
    done = subprocess.run(
        [sys.executable, "-c", "import sys, zaqar_otel.bridge; "
         "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
         " 'zaqar.', 'osprofiler'))))"],
        capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
