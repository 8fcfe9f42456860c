"""OpenTelemetry distribution for OpenStack Zaqar, bridging OSProfiler."""

from zaqar_otel import propagators as _propagators

# opentelemetry.propagate raises at import on an unknown OTEL_PROPAGATORS
# name, which would stop Zaqar: drop such names first.
_propagators.guard_before_import()
