"""Command-line entry points of zaqar-otel."""
