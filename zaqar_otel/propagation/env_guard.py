"""``OTEL_PROPAGATORS`` that cannot stop Zaqar.

``opentelemetry.propagate`` reads ``OTEL_PROPAGATORS`` when it is first
imported and raises ``ValueError`` for a name no installed package provides
(a typo such as ``tracecontext,bogus``). oslo.middleware and the
``opentelemetry-instrument`` launcher import it, so the process dies before
any configuration is read. ``guard_environment()`` takes unknown names out
of the variable, so Zaqar serves with the propagators that exist, and notes
them in the environment (``DROPPED_VARIABLE``, which a process a launcher
execs inherits), so that set-up logs one ERROR naming the variable and
``zaqar-otel check`` reports it.

It must run right before that import, not earlier: only then is
``sys.path`` complete (a ``.pth`` file runs while site directories are still
being added, when a propagator installed in a later one would look
unknown). ``guard_before_import()`` therefore puts a finder in front of
``sys.meta_path`` that runs the guard when ``opentelemetry.propagate`` is
first looked for. Importing ``zaqar_otel`` calls it; the package's
``zaqar-otel.pth``, when the variable is set, imports ``zaqar_otel`` as soon
as any ``opentelemetry`` module is looked for (not at start: a Python process
that never imports OpenTelemetry pays nothing)::

    from zaqar_otel.propagation import env_guard
    env_guard.guard_before_import()
    import opentelemetry.propagate       # guard_environment() runs first
    env_guard.unknown()                # ("bogus",)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

VARIABLE = "OTEL_PROPAGATORS"
GROUP = "opentelemetry_propagator"
#: What zaqar-otel sets up when the variable is unset.
DEFAULT = "tracecontext,osprofiler"

# Where dropped names are noted, for this process and the one a launcher
# execs (``opentelemetry-instrument`` guards in its own process, then execs Zaqar).
DROPPED_VARIABLE = "ZAQAR_OTEL_DROPPED_PROPAGATORS"
_PROPAGATE = "opentelemetry.propagate"


def names(value: str) -> list[str]:
    """The propagator names of a variable's value, as the SDK splits them."""
    return [n.strip() for n in value.split(",") if n.strip()]


def unknown_in(value: str) -> tuple[str, ...]:
    """Names in ``value`` that no installed package provides."""
    # Here, not at the top: the .pth imports this module in every Python
    # process of the environment, and importlib.metadata costs ~25 ms.
    from importlib.metadata import entry_points

    known = {ep.name for ep in entry_points(group=GROUP)}
    return tuple(n for n in names(value) if n != "none" and n not in known)


def guard_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Drop unknown names from ``$OTEL_PROPAGATORS`` (see the module doc)."""
    value = environ.get(VARIABLE)
    if not value:
        return
    found = unknown_in(value)
    if not found:
        return
    environ[DROPPED_VARIABLE] = ",".join(dict.fromkeys((*unknown(environ), *found)))
    kept = [n for n in names(value) if n not in found]
    if kept:
        environ[VARIABLE] = ",".join(kept)
    else:
        # Nothing usable named: the defaults, as if the variable were unset
        # (never "none", which would switch off the signed headers too).
        del environ[VARIABLE]


def unknown(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Names ``guard_environment`` dropped in this process or a launcher."""
    return tuple(dict.fromkeys(names(environ.get(DROPPED_VARIABLE) or "")))


def problem() -> str | None:
    """The ERROR line for the dropped names, or None."""
    dropped = unknown()
    return problem_text(dropped) if dropped else None


def problem_text(dropped: tuple[str, ...]) -> str:
    return (f"{VARIABLE} names {', '.join(repr(n) for n in dropped)}, which no "
            f"installed package provides (a typo?); ignored, the other names "
            f"are used; fix {VARIABLE}")


class _GuardFirst:
    """A ``sys.meta_path`` entry that finds nothing: it runs the guard when
    ``opentelemetry.propagate`` is looked for, then leaves."""

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name == _PROPAGATE:
            if cls in sys.meta_path:
                sys.meta_path.remove(cls)  # type: ignore[arg-type]
            guard_environment()
        return None


def guard_before_import() -> None:
    """Run ``guard_environment`` right before ``opentelemetry.propagate`` is
    first imported (at once if the variable is set and it already was)."""
    if not os.environ.get(VARIABLE) or _GuardFirst in sys.meta_path:
        return
    if _PROPAGATE in sys.modules:
        return  # it survived its import; names are checked again at set-up
    sys.meta_path.insert(0, _GuardFirst)  # type: ignore[arg-type]
