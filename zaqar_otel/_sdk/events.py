"""Events made by the thousand from a few shapes: one call, either path.

A Redis command's event carries eight attributes, of which six (the
statement, the argument count, the server's system, index, address, port
and transport) are the same for every command of that name and argument
count on that connection pool; only its duration (and an error's type)
differ. The caller keeps the shared ones as one ``Shared``, and passes
the event's own as pairs::

    shared = events.Shared((("db.statement", "HGET ? ?"), ...))  # kept
    own = (("db.client.operation.duration", 2e-4),)
    events.add(span, "HGET", start_ns, shared, own)

* on the fast path's span (``fast.recorder.Span``) the event is a
  ``SharedEvent``: no attribute copied or checked per event where the
  span's limits keep them all as they are, and the encoder
  (``fast.otlp_encoding``) encodes the shared part once;
* on any other span, ``span.add_event`` with the attributes as one dict,
  which the SDK checks and keeps as it always does.

Either way a reader of ``span.events`` sees an ``Event`` with the same
name, timestamp and attributes in the same order. Values are plain
(``str``, ``int``, ``float``, ``bool``) and no key is in both parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.trace import Event

from zaqar_otel._sdk.fast import recorder

#: An attribute as ``(key, value)``, the value plain (str, int, float, bool).
Pairs = tuple[tuple[str, Any], ...]


class Shared:
    """The attributes many events carry alike, made once and kept by the
    caller; ``encoded`` is filled by the fast path's encoder when it first
    encodes them (the same bytes whichever thread does)."""

    __slots__ = ("encoded", "longest", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, Any]]) -> None:
        self.pairs: Pairs = tuple(pairs)
        #: The longest str value's length, against a span's length limit.
        self.longest = max((len(v) for _, v in self.pairs if type(v) is str), default=0)
        self.encoded: bytes | None = None


class SharedEvent(Event):
    """An ``Event`` whose attributes are ``shared`` followed by ``own``,
    built into a read-only dict only when read."""

    def __init__(self, name: str, timestamp: int, shared: Shared, own: Pairs) -> None:
        # Not Event.__init__: the attributes are made when asked for.
        self._name = name
        self._timestamp = timestamp
        self._attributes = None
        self.shared = shared
        self.own = own

    @property
    def attributes(self) -> Mapping[str, Any]:
        attributes = self._attributes
        if attributes is None:
            attributes = MappingProxyType(dict(self.shared.pairs + self.own))
            self._attributes = attributes
        return attributes

    @property
    def dropped_attributes(self) -> int:
        return 0


def add(span: Any, name: str, timestamp: int, shared: Shared, own: Pairs) -> None:
    """Add the event ``name`` at ``timestamp`` (ns since the epoch) with the
    attributes of ``shared`` and then ``own`` to ``span``, if it records."""
    if type(span) is recorder.Span:
        span.add_shared_event(SharedEvent(name, timestamp, shared, own))
    else:
        span.add_event(name, dict(shared.pairs + own), timestamp)
