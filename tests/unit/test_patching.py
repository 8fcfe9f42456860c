"""patching: each hook wraps once, and every original can be put back."""

from __future__ import annotations

import logging
import types

import pytest

from zaqar_otel import patching


def test_patch_wraps_once_and_undo_restores() -> None:
    target = types.SimpleNamespace(f=lambda: "original")
    calls: list[str] = []

    def wrapper(original):  # type: ignore[no-untyped-def]
        def wrapped() -> str:
            calls.append("wrapped")
            return original()
        return wrapped

    patches = patching.Patches()
    patches.patch(target, "f", wrapper)
    patches.patch(target, "f", wrapper)  # set-up run twice: no double wrap
    patching.Patches().patch(target, "f", wrapper)  # nor another part's
    assert target.f() == "original" and calls == ["wrapped"]
    patches.undo()
    assert target.f() == "original" and calls == ["wrapped"]


def test_failure_log_logs_the_first_failure_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = patching.FailureLog(logging.getLogger("t"), "tracing a request failed")
    with caplog.at_level(logging.ERROR, logger="t"):
        for _ in range(3):
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                log()
    assert [r.getMessage() for r in caplog.records] == [
        "zaqar-otel: tracing a request failed; further failures are not logged"]
    assert caplog.records[0].exc_info is not None
