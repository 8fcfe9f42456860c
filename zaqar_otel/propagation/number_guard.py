"""An ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` that cannot stop Zaqar.

``opentelemetry.sdk.trace`` reads ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` when it
is first imported (a constant it keeps for old callers) and raises
``ValueError`` on a value that is not a whole number of 0 or more
(``-5``, ``lots``, an empty string): ``zaqar-otel-server`` died at import,
before any configuration was read. ``guard_environment()`` moves such a
value out of the variable, into ``NOTED_VARIABLE``, so the SDK imports
with its default and ``settings`` still names the bad value in one line
(``settings.sdk_numbers``), as it does for every other ``OTEL_*`` number.

Like ``env_guard``, it runs right before that import (a ``sys.meta_path``
entry that finds nothing), and only when the variable is set::

    from zaqar_otel.propagation import number_guard
    number_guard.guard_before_import()
    import opentelemetry.sdk.trace       # guard_environment() runs first
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

VARIABLE = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"
#: Where a bad value is kept (for this process and those it starts).
NOTED_VARIABLE = "ZAQAR_OTEL_BAD_SPAN_ATTRIBUTE_COUNT_LIMIT"
_TRACE_SDK = "opentelemetry.sdk.trace"


def usable(value: str) -> bool:
    """Whether the SDK's ``SpanLimits`` takes ``value`` without raising."""
    text = value.strip().lower()
    if text == "unset":
        return True
    try:
        return int(text) >= 0
    except ValueError:
        return False


def guard_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Move a bad value of the variable to ``NOTED_VARIABLE``."""
    value = environ.get(VARIABLE)
    if value is None or usable(value):
        return
    environ[NOTED_VARIABLE] = value
    del environ[VARIABLE]


def noted(environ: Mapping[str, str] = os.environ) -> str | None:
    """The bad value ``guard_environment`` moved aside, if any."""
    return environ.get(NOTED_VARIABLE)


class _GuardFirst:
    """A ``sys.meta_path`` entry that finds nothing: it runs the guard when
    ``opentelemetry.sdk.trace`` is looked for, then leaves."""

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name == _TRACE_SDK:
            if cls in sys.meta_path:
                sys.meta_path.remove(cls)  # type: ignore[arg-type]
            guard_environment()
        return None


def guard_before_import() -> None:
    """Run ``guard_environment`` right before ``opentelemetry.sdk.trace`` is
    first imported (not at all once it was: nothing reads it at import
    again, and ``settings`` reads it from the variable itself)."""
    if (VARIABLE not in os.environ or _GuardFirst in sys.meta_path
            or _TRACE_SDK in sys.modules):
        return
    sys.meta_path.insert(0, _GuardFirst)  # type: ignore[arg-type]
