"""Zaqar's own API test suite run with and without zaqar-otel (see run.py)."""
