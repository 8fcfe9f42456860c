"""The Resource of every span a process exports.

``service.name`` (default ``zaqar``), ``service.version`` (Zaqar's),
``host.name``, ``telemetry.distro.*`` and a ``service.instance.id`` of the
process's own, merged with ``OTEL_RESOURCE_ATTRIBUTES`` as the SDK does::

    provider = TracerProvider(resource=resource.for_process("zaqar"))
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.util.types import Attributes

import zaqar_otel
from zaqar_otel._sdk import layout

DEFAULT_SERVICE_NAME = "zaqar"
LOG = logging.getLogger(__name__)


def _zaqar_version() -> str:
    try:
        from zaqar import version

        return version.version_info.version_string()
    except Exception:
        return "unknown"


def for_process(service_name: str | None) -> Resource:
    """The Resource of this process (the operator's service name, if set)."""
    instance_id = str(uuid.uuid4())
    attributes = {
        "service.version": _zaqar_version(),
        "telemetry.distro.name": zaqar_otel.DISTRO_NAME,
        "telemetry.distro.version": zaqar_otel.__version__,
        "host.name": socket.gethostname(),
    }
    if service_name:
        attributes[SERVICE_NAME] = service_name
    if SERVICE_INSTANCE_ID not in OTELResourceDetector().detect().attributes:
        # Ours, unless OTEL_RESOURCE_ATTRIBUTES names one (the SDK's default
        # is made once at import, so forked workers would share it).
        attributes[SERVICE_INSTANCE_ID] = instance_id
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return _ProcessResource(_utf8(resource.attributes), resource.schema_url,
                            generated_instance_id=instance_id)


def _utf8(attributes: Attributes) -> Attributes:
    """``attributes`` with each character that cannot be UTF-8 (a byte of
    ``OTEL_RESOURCE_ATTRIBUTES`` that is not, surrogate-escaped in
    ``os.environ``) as U+FFFD: the SDK's metric encoder fails on such a
    value at every export, zaqar-otel's span encoder writes ``?``; one line."""
    found = dict(attributes or {})
    bad = [key for key, value in found.items()
           if isinstance(value, str) and not _encodable(value)]
    for key in bad:
        found[key] = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c
                             for c in str(found[key]))
    if bad:
        LOG.warning("zaqar-otel: resource attributes %s hold bytes that are "
                    "not UTF-8 (OTEL_RESOURCE_ATTRIBUTES?); each is U+FFFD "
                    "for spans and metrics alike", ", ".join(sorted(bad)))
    return found


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


SERVICE_INSTANCE_ID = "service.instance.id"


class _ProcessResource(Resource):
    """The provider's Resource: hashed once, and one instance id a process.

    * The OTLP encoder groups every exported span by resource in a dict, and
      the SDK's ``Resource.__hash__`` serialises all attributes to JSON each
      time: a JSON dump per span on the export thread. The attributes do not
      change within a process, so neither does the hash.
    * Workers forked after set-up (gunicorn ``--preload``, uwsgi, which forks
      without Python's at-fork hooks) must not export as their parent: in a
      process other than the one it was made in, the resource takes a
      ``service.instance.id`` of its own (unless the operator set one).
    """

    def __init__(self, attributes: Attributes, schema_url: str | None = None,
                 generated_instance_id: str | None = None) -> None:
        super().__init__(attributes or {}, schema_url)
        self._generated_instance_id = generated_instance_id
        self._pid = os.getpid()
        self._hash_value = super().__hash__()
        self._fork_lock = threading.Lock()
        self._replaceable = layout.resource_attributes_replaceable(self)

    def _this_process(self) -> None:
        with self._fork_lock:
            if self._pid == os.getpid():
                return
            if not self._replaceable:
                layout.fast_path_off("a forked worker keeps its parent's "
                                         "service.instance.id")
                self._pid = os.getpid()
                self._hash_value = super().__hash__()
                return
            attributes = dict(self._attributes)
            if attributes.get(SERVICE_INSTANCE_ID) == self._generated_instance_id:
                self._generated_instance_id = str(uuid.uuid4())
                attributes[SERVICE_INSTANCE_ID] = self._generated_instance_id
                self._attributes = BoundedAttributes(attributes=attributes,
                                                     immutable=True)
            self._pid = os.getpid()
            self._hash_value = super().__hash__()

    @property
    def attributes(self) -> Attributes:  # type: ignore[override]  # same values
        if self._pid != os.getpid():
            self._this_process()
        return self._attributes

    def __hash__(self) -> int:
        if self._pid != os.getpid():
            self._this_process()
        return self._hash_value
