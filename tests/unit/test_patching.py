"""patching: each hook wraps once, and every original can be put back."""

from __future__ import annotations

import types

from zaqar_otel import patching


def test_patch_wraps_once_and_unpatch_all_restores() -> None:
    target = types.SimpleNamespace(f=lambda: "original")
    calls: list[str] = []

    def wrapper(original):  # type: ignore[no-untyped-def]
        def wrapped() -> str:
            calls.append("wrapped")
            return original()
        return wrapped

    patching.patch(target, "f", wrapper)
    patching.patch(target, "f", wrapper)  # set-up run twice: no double wrap
    assert target.f() == "original" and calls == ["wrapped"]
    patching.unpatch_all()
    assert target.f() == "original" and calls == ["wrapped"]
