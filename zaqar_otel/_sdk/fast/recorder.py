"""The SDK's TracerProvider with a leaner span: the same spans, fewer steps.

A span of the SDK costs a traced Zaqar request more than anything else
zaqar-otel does: starting and ending one runs about 120 Python calls (a
sampler asking three times for the parent, a ``BoundedAttributes`` with its
own lock that cleans every value, two ``BoundedList`` for events and links
most spans never have, and a copy of the whole span, a new ``ReadableSpan``,
handed to the processors at its end). ``TracerProvider`` here is the SDK's,
except that its tracers start ``Span``, a subclass of the SDK's ``Span``
that takes the short way where the outcome is the same:

* a child of a valid parent under the SDK's default ``ParentBased`` sampler
  follows the parent's sampled flag and trace state without the sampler's
  calls (roots, and any other sampler, ask the sampler as the SDK does);
* the parent is read from the current context in one step, its fields in
  one unpacking, and the child's ``SpanContext`` built as one tuple, where
  ``_sdk.layout`` finds the API laid out for it (``current_context_slot``,
  ``local_span_context_maker``); the sampling ``Decision`` (an Enum, each
  member read a look-up) is compared by identity first;
* attributes live in a plain dict while every key is a non-empty ``str``,
  every value a ``str``, ``bool``, ``int`` or ``float``, or a list or tuple
  of ``str`` (message ids; kept as a tuple, as the SDK keeps it) and the
  count within ``max_span_attributes``; a ``str`` longer than
  ``max_span_attribute_length`` is cut to it there (in a list too), as the
  SDK's ``BoundedAttributes`` cuts it (without its
  warning, one per value, which a client could repeat at will); anything
  else turns them into the SDK's own ``BoundedAttributes``, which then
  decides as it always does (cleaning, truncating, dropping the oldest);
  a ``KeptAttributes`` set (``_sdk.attributes``: a trace point's, a SQL
  statement's) is checked so once per set of limits, then copied in one
  step, and the encoder keeps its bytes for every span still holding it;
* events are a plain list until one more would be dropped, then the SDK's
  ``BoundedList``; links get theirs when the first one comes;
  an event's attributes the SDK would keep as they are (plain values,
  within its limits) are a read-only dict instead of a ``BoundedAttributes``
  that cleans each value again;
* ``end()`` hands the processors the span itself, ended (it refuses every
  change from then on, as the SDK's does), instead of a copy;
* with a single span processor whose ``on_start`` and ``_on_ending`` do
  nothing (a batch processor's), a span calls its ``on_end`` directly
  instead of through the provider's loop over processors (``SpanProcessors``).

Everything a processor, exporter or the encoder reads is the SDK's
``ReadableSpan`` view, the same values (``tests/unit/test_recording.py``
checks spans of both kinds field by field and byte for byte through the
SDK's OTLP encoder). Where the SDK is laid out otherwise than this was
written for (``layout.span_layout_known``), every tracer is the SDK's::

    provider = TracerProvider(resource=..., sampler=..., id_generator=...)
    tracer = provider.get_tracer("zaqar_otel", version)
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from types import MappingProxyType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util import types

from zaqar_otel._sdk import layout
from zaqar_otel._sdk.attributes import KeptAttributes

LOG = logging.getLogger(__name__)
_SDK_LOG = logging.getLogger("opentelemetry.sdk.trace")  # the SDK's own lines

_PLAIN_VALUES = frozenset((str, bool, int, float))
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.DEFAULT)
_SAMPLED_RANDOM = trace_api.TraceFlags(
    trace_api.TraceFlags.SAMPLED | trace_api.TraceFlags.RANDOM_TRACE_ID)
_NOT_SAMPLED_RANDOM = trace_api.TraceFlags(trace_api.TraceFlags.RANDOM_TRACE_ID)
_get_current_span = trace_api.get_current_span
_RECORD_AND_SAMPLE = sampling.Decision.RECORD_AND_SAMPLE
_DROP = sampling.Decision.DROP
# The API's current Context and the current span's key in it, and a maker of
# a local span's SpanContext in one step, where the API is laid out for them
# (``_sdk.layout``); else None, and the API's own calls. Probed when the first
# TracerProvider is made (``_read_layout``), not at import: until then the
# API's own calls.
_CURRENT_SPAN: Any = None
_LOCAL_CONTEXT: Any = None
# The class of a tracer's span metrics when they are off: not called.
_QUIET_METRICS: Any = None
_layout_read = False


def _read_layout() -> None:
    global _CURRENT_SPAN, _LOCAL_CONTEXT, _QUIET_METRICS, _layout_read  # noqa: PLW0603 - read once
    if not _layout_read:
        _CURRENT_SPAN = layout.current_context_slot()
        _LOCAL_CONTEXT = layout.local_span_context_maker()
        _QUIET_METRICS = layout.quiet_tracer_metrics()
        _layout_read = True


class Span(sdk_trace.Span):
    """The SDK's ``Span``, recorded with fewer steps (see the module)."""

    # The KeptAttributes it started with, while its attributes are still
    # those (any change forgets it): the encoder uses its encoded bytes.
    _kept: KeptAttributes | None = None

    # Not the SDK's __init__: Tracer.start_span sets every field the SDK's
    # own __init__ sets (layout.span_layout_known checks the list).
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover
        raise TypeError("zaqar_otel._sdk.fast.recorder.Span is made by its Tracer")

    # -- attributes ---------------------------------------------------------

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        with self._lock:
            if self._end_time is not None:
                _SDK_LOG.warning("Setting attribute on ended span.")
                return
            self._kept = None
            if not self._set_plain(key, value):
                self._bounded()[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        with self._lock:
            if self._end_time is not None:
                _SDK_LOG.warning("Setting attribute on ended span.")
                return
            self._kept = None
            if type(self._attributes) is dict and all(
                    type(k) is str and k and type(v) in _PLAIN_VALUES
                    for k, v in attributes.items()):
                # One by one is what the SDK's _set_items comes to here.
                for key, value in attributes.items():
                    if not self._set_plain(key, value):
                        self._bounded()[key] = value
                return
            self._bounded()._set_items(attributes)

    def _set_plain(self, key: str, value: Any) -> bool:
        """Set it in the plain dict, if the SDK would keep it as it is and
        drop nothing (lock held); False: the SDK's way must decide."""
        attributes: Any = self._attributes
        if type(attributes) is not dict:
            return False
        limits = self._limits
        if not (type(key) is str and key):
            return False
        kind = type(value)
        if kind is str:
            limit = limits.max_span_attribute_length
            if limit is not None and len(value) > limit:
                value = value[:limit]  # what BoundedAttributes keeps
        elif kind is list or kind is tuple:  # message ids
            value = _text_sequence(value, limits.max_span_attribute_length)
            if value is None:
                return False
        elif kind not in _PLAIN_VALUES:
            return False
        if key in attributes:
            del attributes[key]  # the SDK's order: moved last
        elif (limits.max_span_attributes is not None
              and len(attributes) >= limits.max_span_attributes):
            return False  # the SDK drops the oldest, and counts it
        attributes[key] = value
        return True

    def _bounded(self) -> Any:
        """The attributes as the SDK keeps them, from now on (lock held)."""
        attributes: Any = self._attributes
        if type(attributes) is dict:
            limits = self._limits
            attributes = BoundedAttributes(
                limits.max_span_attributes, attributes, immutable=False,
                max_value_len=limits.max_span_attribute_length)
            self._attributes = attributes
        return attributes

    # -- events and links: their lists made when the first one comes ---------

    def add_event(self, name: str, attributes: types.Attributes = None,
                  timestamp: int | None = None) -> None:
        if attributes:
            plain = _plain_event_attributes(attributes, self._limits)
            if plain is None:
                super().add_event(name, attributes, timestamp)
            else:
                self._add_event(sdk_trace.Event(name, plain, timestamp))
            return
        # No attributes (a BEGIN folded into its statement): the SDK would
        # make an empty immutable BoundedAttributes for this event alone; one
        # per set of limits is shared, since nothing can change it.
        limits = self._limits
        self._add_event(sdk_trace.Event(name, _no_attributes(
            limits.max_event_attributes, limits.max_attribute_length), timestamp))

    def add_shared_event(self, event: Any) -> None:
        """Add ``event`` (an ``_sdk.events.SharedEvent``, plain values) as
        it is where the SDK would keep every attribute unchanged: each str
        within ``max_attribute_length``, the count within
        ``max_event_attributes``; else the SDK's way, as one dict."""
        limits = self._limits
        count, length = limits.max_event_attributes, limits.max_attribute_length
        shared, own = event.shared, event.own
        kept = count is None or len(shared.pairs) + len(own) <= count
        if kept and length is not None:
            kept = shared.longest <= length
            for _, value in own:  # a duration, an error's type: a loop, no generator
                if type(value) is str and len(value) > length:
                    kept = False
        if kept:
            self._add_event(event)
        else:
            super().add_event(event.name, dict(event.attributes), event.timestamp)

    def _add_event(self, event: Any) -> None:
        # A plain list while within max_events (appended under the span's
        # lock, which the SDK takes too); the SDK's BoundedList, with its
        # own lock and its count of dropped events, once it would drop one.
        with self._lock:
            if self._end_time is None:
                events: Any = self._events
                limit = self._limits.max_events
                if type(events) is list:
                    if limit is None or len(events) < limit:
                        events.append(event)
                        return
                    events = self._events = BoundedList.from_seq(limit, events)
                elif type(events) is tuple:
                    if limit is None or limit > 0:
                        self._events = [event]
                        return
                    events = self._events = BoundedList(limit)
                events.append(event)
                return
        _SDK_LOG.warning("Tried calling %s on an ended span.", "_add_event")

    def _add_link(self, link: trace_api.Link) -> None:
        with self._lock:
            if self._end_time is None:
                if type(self._links) is tuple:
                    self._links = BoundedList(self._limits.max_links)
                self._links.append(link)  # type: ignore[attr-defined]
                return
        _SDK_LOG.warning("Tried calling %s on an ended span.", "_add_link")

    # -- start and end ------------------------------------------------------

    def start(self, start_time: int | None = None,
              parent_context: context_api.Context | None = None) -> None:
        with self._lock:
            if self._start_time is not None:
                _SDK_LOG.warning("Calling start() on a started span.")
                return
            self._start_time = start_time if start_time is not None else time_ns()
        processor = self._span_processor
        if getattr(processor, "quiet_one", None) is None:  # else its on_start is empty
            processor.on_start(self, parent_context=parent_context)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                _SDK_LOG.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            attributes: Any = self._attributes
            if type(attributes) is not dict:
                attributes._immutable = True
        if self._record_end_metrics:
            self._record_end_metrics()
        processor = self._span_processor
        # The span itself, ended: it refuses every change from now on.
        one = getattr(processor, "quiet_one", None)
        if one is not None:  # its _on_ending is empty
            one.on_end(self)
            return
        processor._on_ending(self)
        processor.on_end(self)

    def _readable_span(self) -> sdk_trace.ReadableSpan:
        return self


class Tracer(sdk_trace.Tracer):
    """The SDK's ``Tracer``, starting ``Span``; made by ``TracerProvider``."""

    def start_span(  # noqa: PLR0913 - the SDK's signature
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: trace_api.SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        current: Any = None
        if _CURRENT_SPAN is not None:
            variable, span_key = _CURRENT_SPAN
            current = (variable.get() if context is None else context).get(span_key)
        if type(current) is not Span:
            current = _get_current_span(context)
        # Our own span's context read as a field: get_span_context and its
        # typing.cast are two calls a span.
        parent: trace_api.SpanContext | None = (
            current._context if type(current) is Span else current.get_span_context())
        if not self._is_enabled() or (
                parent is not None and type(parent) is not trace_api.SpanContext):
            # Disabled tracers and odd parents: the SDK's own steps.
            return super().start_span(name, context, kind, attributes, links,
                                      start_time, record_exception,
                                      set_status_on_exception)
        links = links or ()
        valid = False
        if parent is not None:
            if _LOCAL_CONTEXT is not None:  # the tuple layout checked
                trace_id, _, _, flags, parent_state, valid = parent
            else:
                trace_id, flags = parent.trace_id, parent.trace_flags
                parent_state, valid = parent.trace_state, parent.is_valid
        if valid:
            # W3C's flag bits: 1 sampled, 2 a random trace id.
            if self._follows_parent():
                result = None
                decision = _RECORD_AND_SAMPLE if flags & 1 else _DROP
            else:
                result = self.sampler.should_sample(context, trace_id, name, kind,
                                                    attributes, links)
            random = bool(flags & 2)
        else:
            parent = None  # a root, in the SDK's order of calls
            trace_id = self.id_generator.generate_trace_id()
            result = self.sampler.should_sample(context, trace_id, name, kind,
                                                attributes, links)
            random = self.id_generator.is_trace_id_random()
        if result is None:
            trace_state = parent_state
            span_attributes = attributes
        else:
            decision = result.decision
            trace_state = result.trace_state  # type: ignore[assignment]
            span_attributes = result.attributes
        # Decision is an Enum: each member read costs a look-up of its own.
        sampled = decision is _RECORD_AND_SAMPLE or decision.is_sampled()
        if random:
            flags = _SAMPLED_RANDOM if sampled else _NOT_SAMPLED_RANDOM
        else:
            flags = _SAMPLED if sampled else _NOT_SAMPLED
        span_id = self.id_generator.generate_span_id()
        span_context = (
            trace_api.SpanContext(trace_id, span_id, is_remote=False,
                                  trace_flags=flags, trace_state=trace_state)
            if _LOCAL_CONTEXT is None
            else _LOCAL_CONTEXT(trace_id, span_id, flags, trace_state))
        # The SDK's span metrics (off unless asked for): with them off, no
        # call to record nothing, and end() has none to make either.
        tracer_metrics = self._tracer_metrics
        record_end_metrics = (None if type(tracer_metrics) is _QUIET_METRICS
                              else tracer_metrics.start_span(parent, decision))
        if not sampled and not decision.is_recording():
            return trace_api.NonRecordingSpan(context=span_context)
        # object.__new__: the SDK's Span.__new__ only refuses its own class.
        span = object.__new__(Span)
        limits = self._span_limits
        # The fields of the SDK's Span.__init__ and ReadableSpan.__init__.
        span._name = name
        span._context = span_context
        span._kind = kind
        span._instrumentation_info = self.instrumentation_info
        span._instrumentation_scope = self._instrumentation_scope
        span._parent = parent
        span._start_time = None
        span._end_time = None
        span._resource = self.resource
        span._status = _UNSET
        span._sampler = self.sampler
        span._trace_config = None
        span._record_exception = record_exception
        span._set_status_on_exception = set_status_on_exception
        span._span_processor = self.span_processor
        span._limits = limits
        span._lock = threading.Lock()
        if (type(span_attributes) is KeptAttributes
                and span_attributes.checked is limits):
            # Checked once for these limits: copied in one step.
            span._attributes = dict(span_attributes)
            span._kept = span_attributes
        else:
            span._attributes = _initial_attributes(span_attributes, limits)
            if type(span_attributes) is KeptAttributes:
                _check_kept(span, span_attributes, limits)
        span._events = ()
        span._links = span._new_links(links) if links else ()
        span._record_end_metrics = record_end_metrics
        # What span.start() does, less its lock and its check: this span is
        # new and no other thread has it yet.
        span._start_time = start_time if start_time is not None else time_ns()
        processor = span._span_processor
        if getattr(processor, "quiet_one", None) is None:  # else its on_start is empty
            processor.on_start(span, parent_context=context)
        return span

    def _follows_parent(self) -> bool:
        follows = self.__dict__.get("_zaqar_otel_follows_parent")
        if follows is None or follows[0] is not self.sampler:
            follows = (self.sampler, layout.follows_parent(self.sampler))
            self.__dict__["_zaqar_otel_follows_parent"] = follows
        return bool(follows[1])


@functools.lru_cache(maxsize=8)
def _no_attributes(max_count: int | None, max_length: int | None) -> BoundedAttributes:
    """An event's empty attributes, as the SDK makes them (immutable)."""
    return BoundedAttributes(max_count, None, max_value_len=max_length, immutable=True)


def _plain_event_attributes(attributes: types.Attributes,
                            limits: sdk_trace.SpanLimits) -> Mapping[str, Any] | None:
    """An event's attributes, read-only, where the SDK's ``BoundedAttributes``
    would keep every one as it is (a Redis command's event: eight of them,
    about 15 µs a event through the SDK's cleaning); None: the SDK decides."""
    if type(attributes) is not dict:
        return None
    count, length = limits.max_event_attributes, limits.max_attribute_length
    if count is not None and len(attributes) > count:
        return None
    for key, value in attributes.items():
        kind = type(value)
        if not (type(key) is str and key and kind in _PLAIN_VALUES):
            return None
        if kind is str and length is not None and len(value) > length:
            return None
    return MappingProxyType(dict(attributes))


def _text_sequence(value: Sequence[Any], length: int | None) -> tuple[str, ...] | None:
    """A list or tuple of ``str`` as ``BoundedAttributes`` keeps it: a tuple,
    each string cut to ``length``; None for any other sequence (the SDK's
    cleaning decides)."""
    for item in value:
        if type(item) is not str:
            return None
    if length is None:
        return tuple(value)
    return tuple(item if len(item) <= length else item[:length] for item in value)


def _check_kept(span: Span, kept: KeptAttributes, limits: sdk_trace.SpanLimits
                ) -> None:
    """Mark ``kept`` as fitting ``limits`` if the span kept every value of
    it as it is (nothing cut, dropped or converted)."""
    attributes = span._attributes
    if type(attributes) is dict and len(attributes) == len(kept) and all(
            attributes.get(key) is value for key, value in kept.items()):
        kept.checked = limits
        span._kept = kept


def _initial_attributes(attributes: types.Attributes,
                        limits: sdk_trace.SpanLimits) -> Any:
    """A plain dict when the SDK would keep every attribute (long strings
    cut to the limit, as it cuts them), else the SDK's ``BoundedAttributes``."""
    if not attributes:
        return {}
    maxlen = limits.max_span_attributes
    if maxlen is None or len(attributes) <= maxlen:
        length = limits.max_span_attribute_length
        plain = {}
        value: Any
        for key, value in attributes.items():
            kind = type(value)
            if not (type(key) is str and key):
                break
            if kind is str:
                if length is not None and len(value) > length:
                    value = value[:length]  # what BoundedAttributes keeps
            elif kind is list or kind is tuple:
                value = _text_sequence(value, length)
                if value is None:
                    break
            elif kind not in _PLAIN_VALUES:
                break
            plain[key] = value
        else:
            return plain
    return BoundedAttributes(maxlen, attributes, immutable=False,
                             max_value_len=limits.max_span_attribute_length)


class SpanProcessors(sdk_trace.SynchronousMultiSpanProcessor):
    """The SDK's ``SynchronousMultiSpanProcessor``, naming in ``quiet_one``
    its only processor when it has one whose ``on_start`` and
    ``_on_ending`` do nothing: ``Span`` then calls that one's ``on_end``
    alone. With two or more, or another kind, ``quiet_one`` is None and
    every call goes through the SDK's loop."""

    quiet_one: sdk_trace.SpanProcessor | None = None

    def add_span_processor(self, span_processor: sdk_trace.SpanProcessor) -> None:
        self.quiet_one = None  # spans ending meanwhile take the SDK's loop
        super().add_span_processor(span_processor)
        processors = self._span_processors
        if len(processors) == 1 and _quiet(type(processors[0])):
            self.quiet_one = processors[0]


def _quiet(cls: type) -> bool:
    return layout.quiet_processor(cls)


class TracerProvider(sdk_trace.TracerProvider):
    """The SDK's ``TracerProvider``; its tracers start ``Span``, and its
    processors are ``SpanProcessors`` unless it is given others."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _read_layout()
        # active_span_processor is the SDK's fourth positional parameter.
        if (len(args) < 4 and kwargs.get("active_span_processor") is None
                and layout.span_layout_known()):
            kwargs["active_span_processor"] = SpanProcessors()
        super().__init__(*args, **kwargs)

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if type(tracer) is sdk_trace.Tracer and layout.span_layout_known():
            # Same object, kept in the provider's cache: only the class of its
            # start_span changes, every field stays the SDK's.
            tracer.__class__ = Tracer
        return tracer
