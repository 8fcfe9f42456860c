"""Attribute sets made once and given to many spans: a trace point's, a SQL
statement's.

A span of the fast path copies the attributes it starts with and checks
each value against its limits, and the encoder builds a key of the set to
find its encoded bytes: per span, although a trace point starts every span
with the same two attributes. A ``KeptAttributes`` is a read-only dict: the
fast path's tracer checks it once per set of limits and then copies it in
one step, and the encoder keeps its encoded bytes on it, used for a span
whose attributes did not change since it started. Any other tracer takes it
as the dict it is::

    attributes = KeptAttributes({"osprofiler.name": name, ...})  # kept
    span = tracer.start_span(name, attributes=attributes)
"""

from __future__ import annotations

from typing import Any, NoReturn


class KeptAttributes(dict[str, Any]):
    """A dict that refuses changes; ``checked`` is the span limits it was
    found to fit as it is (set by the fast path's tracer), ``encoded`` its
    encoded attribute fields (set by the fast path's encoder, the same
    bytes whichever thread does)."""

    __slots__ = ("checked", "encoded")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checked: Any = None
        self.encoded: bytes | None = None

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a KeptAttributes is read-only: copy it with dict()")

    __setitem__ = __delitem__ = _refuse
    update = pop = popitem = clear = setdefault = __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> Any:  # a copy or a pickle is a plain dict
        return dict, (dict(self),)
