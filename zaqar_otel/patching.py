"""Wrapping Zaqar's and osprofiler's functions: once each, and reversibly.

Every hook of zaqar-otel is a function replaced by a wrapper that calls the
original. A ``Patches`` (one for each part set-up installs, handed down
with it) does it at most once per attribute (a second call is a no-op, so
set-up is idempotent), remembers the original on the wrapper, and ``undo``
puts back every original it replaced. A hook that fails must never break
what it wraps: ``FailureLog`` logs its first failure and swallows the rest::

    patches = Patches()
    patches.patch(zaqar.storage.pooling.Catalog, "lookup",
                  lambda lookup: traced(lookup))
    patches.undo()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_ORIGINAL = "__zaqar_otel_original__"


class Patches:
    """The functions one part of set-up replaced, to put back together."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str]] = []

    def patch(self, owner: Any, name: str, wrapper: Callable[[Any], Any]) -> None:
        """Replace ``owner.name`` with ``wrapper(original)``, unless done already
        (by these patches or any other)."""
        current = getattr(owner, name)
        if getattr(current, _ORIGINAL, None) is not None:
            return
        replacement = wrapper(current)
        setattr(replacement, _ORIGINAL, current)
        setattr(owner, name, replacement)
        self._done.append((owner, name))

    def undo(self) -> None:
        """Put back every original ``patch`` replaced, newest first."""
        while self._done:
            owner, name = self._done.pop()
            setattr(owner, name, getattr(getattr(owner, name), _ORIGINAL))


class FailureLog:
    """A hook's own failures: the first one logged with its traceback, the
    rest swallowed silently, so a broken hook cannot flood the log."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._logged = False

    def __call__(self) -> None:
        """Call from an ``except`` block."""
        if not self._logged:
            self._logged = True
            self._logger.exception("zaqar-otel: %s; further failures are not "
                                   "logged", self._what)
