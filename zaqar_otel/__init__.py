"""OpenTelemetry distribution for OpenStack Zaqar, bridging OSProfiler.

The public face: the OSProfiler propagator, the start-up hook, the version::

    from zaqar_otel import OSProfilerPropagator, install, __version__

The bridge's whole API is ``zaqar_otel.bridge`` (the propagator, the id
mapping, the header codec); the start-up hook's is ``zaqar_otel.instrument``
(``install``, ``setup``, ``shutdown``, ``teardown``).
"""

from zaqar_otel.propagation import env_guard as _env_guard
from zaqar_otel.propagation import number_guard as _number_guard

# opentelemetry.propagate raises at import on an unknown OTEL_PROPAGATORS
# name, which would stop Zaqar: drop such names first.
_env_guard.guard_before_import()
# opentelemetry.sdk.trace raises at import on a bad
# OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: move such a value aside first.
_number_guard.guard_before_import()

__version__: str

#: The OTel distro name, as ``telemetry.distro.name`` on every span's resource.
DISTRO_NAME = "zaqar-otel"


def install() -> None:
    """Hook zaqar-otel into Zaqar's start-up (``zaqar_otel.instrument``)."""
    from zaqar_otel import instrument

    instrument.install()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("zaqar-otel")
    except metadata.PackageNotFoundError:  # a source tree, not installed
        return "0+unknown"


def __getattr__(name: str) -> object:
    # Lazily, so that importing the package (done by the .pth start-up
    # guard in every Python process of the environment) loads neither an
    # OpenTelemetry module nor importlib.metadata (about 25 ms).
    if name == "__version__":
        version = globals()["__version__"] = _version()
        return version
    if name == "OSProfilerPropagator":
        from zaqar_otel.propagation.propagator import OSProfilerPropagator

        return OSProfilerPropagator
    raise AttributeError(name)


__all__ = ["DISTRO_NAME", "OSProfilerPropagator", "__version__", "install"]
