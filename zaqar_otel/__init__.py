"""OpenTelemetry distribution for OpenStack Zaqar, bridging OSProfiler.

The public face: the OSProfiler propagator, the start-up hook, the version::

    from zaqar_otel import OSProfilerPropagator, install, __version__
"""

from importlib import metadata as _metadata

from zaqar_otel.propagation import env_guard as _env_guard

# opentelemetry.propagate raises at import on an unknown OTEL_PROPAGATORS
# name, which would stop Zaqar: drop such names first.
_env_guard.guard_before_import()

try:
    __version__ = _metadata.version("zaqar-otel")
except _metadata.PackageNotFoundError:  # a source tree, not installed
    __version__ = "0+unknown"

#: The OTel distro name, as ``telemetry.distro.name`` on every span's resource.
DISTRO_NAME = "zaqar-otel"


def install() -> None:
    """Hook zaqar-otel into Zaqar's start-up (``zaqar_otel.startup``)."""
    from zaqar_otel import startup

    startup.install()


def __getattr__(name: str) -> object:
    # Lazily, so that importing the package (done by the .pth start-up
    # guard) loads no OpenTelemetry module.
    if name == "OSProfilerPropagator":
        from zaqar_otel.propagation.propagator import OSProfilerPropagator

        return OSProfilerPropagator
    raise AttributeError(name)


__all__ = ["DISTRO_NAME", "OSProfilerPropagator", "__version__", "install"]
