"""OpenTelemetry distribution for OpenStack Zaqar, bridging OSProfiler."""
