"""Settings for the Keystone peer test (not under tests/: its own entry points)."""

from __future__ import annotations

import os

# Everything the test starts listens on loopback; a proxy from the
# environment (honoured by requests, also in the processes the test starts:
# the CLI, Zaqar, Keystone) must never see that traffic.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(
        filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))
