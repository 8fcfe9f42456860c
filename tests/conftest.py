"""Session-wide test settings."""

import os

# Everything the tests start listens on loopback; a proxy from the
# environment (honoured by requests and gRPC, also in the Zaqar processes the
# tests start) must never see that traffic.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(
        filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))
