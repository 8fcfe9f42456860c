"""zaqar-otel's process state, with one owner.

``Running`` is what one ``setup(conf)`` built: the settings it read, the
provider, tracer and request entry, the metrics, and how to undo all of it.
``Hook`` owns the process's state: the running set-up (None before
``setup`` and after ``teardown``), what ``install`` changed, the providers
set-up made. ``zaqar_otel.instrument`` holds the one ``Hook``; every part
of set-up is handed the objects it needs (as arguments, or in the closures
of the functions it puts in place of Zaqar's), and none reads them back
from a global.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from zaqar_otel import metrics, patching, redact, settings
from zaqar_otel._sdk import layout
from zaqar_otel.entry import lifecycle
from zaqar_otel.export import processor


@dataclass
class Running:
    """What one set-up built, and how to undo it."""

    settings: settings.Settings
    provider: Any = None
    tracer: trace.Tracer | None = None
    entry: lifecycle.Entry | None = None  # once tracing is on
    metrics: metrics.Metrics | None = None  # once metrics are on
    drops: processor.DropCounter | None = None  # our span processor's counts
    # The semantic-convention modes (OTEL_SEMCONV_STABILITY_OPT_IN) the
    # instrumentations follow, read once: every name zaqar-otel gives follows.
    conventions: layout.Conventions = layout.OLD_CONVENTIONS
    owns_provider: bool = False
    # What set-up changed outside its own objects, to undo in teardown().
    undo: list[Callable[[], None]] = field(default_factory=list)


class Hook:
    """The process's state: the one object set-up reads and changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: The set-up in force; None before ``setup`` and after ``teardown``.
        self.running: Running | None = None
        #: Zaqar's start-up functions ``install`` replaced.
        self.patches = patching.Patches()
        #: What ``install`` changed beyond patches (the log record factory).
        self.installed: list[Callable[[], None]] = []
        #: The endpoint passwords and header values set-up has read: masked
        #: in every line set-up logs and the SDK's exporters log.
        self.secrets = redact.Secrets()
        #: Providers set-up built, so that a set-up after ``teardown`` builds
        #: its own instead of taking a shut-down one for the operator's.
        self.made: weakref.WeakSet[TracerProvider] = weakref.WeakSet()
