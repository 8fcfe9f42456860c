"""A header pair verified once is not verified again; nothing else changes:
other keys, a changed signature and a forged payload still decide anew."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry import trace

from zaqar_otel.propagation import codec, propagator
from zaqar_otel.propagation.propagator import OSProfilerPropagator


def _signed(key: str) -> dict[str, str]:
    base = str(uuid.uuid4())
    return codec.encode(base, str(uuid.uuid4()), key)


def _parent(prop: OSProfilerPropagator, carrier: dict[str, str]) -> int | None:
    span_context = trace.get_current_span(prop.extract(carrier)).get_span_context()
    return span_context.span_id if span_context.is_valid else None


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = codec.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(codec, "decode", counting)
    return calls


def test_the_same_pair_is_verified_once(decodes: list[Any]) -> None:
    prop = OSProfilerPropagator(["k"])
    carrier = _signed("k")
    first = _parent(prop, carrier)
    assert first is not None
    assert [_parent(prop, carrier) for _ in range(5)] == [first] * 5
    assert len(decodes) == 1


def test_other_keys_decide_anew(decodes: list[Any]) -> None:
    keys = ["old"]
    prop = OSProfilerPropagator(lambda: keys)
    carrier = _signed("old")
    assert _parent(prop, carrier) is not None
    keys[:] = ["new"]  # the old key retired: its header must stop verifying
    assert _parent(prop, carrier) is None
    assert len(decodes) == 2


def test_a_changed_signature_or_payload_is_not_taken_from_the_kept_pair(
        decodes: list[Any]) -> None:
    prop = OSProfilerPropagator(["k"])
    carrier = _signed("k")
    assert _parent(prop, carrier) is not None
    forged_signature = {**carrier, "X-Trace-HMAC": "0" * 40}
    other = _signed("k")
    forged_payload = {**other, "X-Trace-HMAC": carrier["X-Trace-HMAC"]}
    assert _parent(prop, forged_signature) is None
    assert _parent(prop, forged_payload) is None
    assert _parent(prop, forged_signature) is None  # failures are not kept
    assert len(decodes) == 4


def test_the_kept_pairs_are_bounded() -> None:
    prop = OSProfilerPropagator(["k"])
    for _ in range(propagator.VERIFIED_MAX + 10):
        assert _parent(prop, _signed("k")) is not None
    assert 0 < len(prop._verified) <= propagator.VERIFIED_MAX
