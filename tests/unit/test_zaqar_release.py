"""What zaqar-otel relies on in the installed Zaqar release (20.1 to 23.x).

``make breadth`` runs this file against every Zaqar release the package
declares (``zaqar >= 20.1, < 24``). Every function a hook replaces must
exist with the parameters the hook calls it with. Where the releases
differ, the hook does not depend on the difference, and a test here names
it:

* Zaqar 20 and 21 build osprofiler's notifier in ``profile.setup`` by hand,
  trace WSGI with a middleware of their own (``ProfileWSGIMiddleware``, which
  never ends osprofiler's profiler: see tests/functional/test_root_shape.py)
  and call ``install_wsgi_tracer`` only when ``trace_wsgi_transport`` is on;
  Zaqar 22 and 23 call osprofiler's ``init_from_conf`` and install its
  ``WsgiMiddleware`` always. zaqar-otel replaces both functions on every
  release: set-up is its own, and Zaqar's tracer is never installed.
* Zaqar 20.1 has no request-id middleware: its responses carry no
  ``x-openstack-request-id``, so its server spans have no
  ``openstack.request_id`` (tests/functional/test_zaqar_release.py).
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from zaqar_otel import distro

ZAQAR = metadata.version("zaqar")

# module, attribute path, the leading parameters the hook passes (by
# position) or reads by name ("a|b": either name): zaqar_otel.hook.zaqar,
# .entry.websocket, .backends.pooling, .messaging.deliveries / links /
# operations. links finds a receiving method's queue and project by name.
QUEUE = "queue|queue_name"  # redis says queue, mongodb queue_name
TARGETS = [
    ("zaqar.transport.middleware.profile", "setup", ["conf", "binary", "host"]),
    ("zaqar.transport.middleware.profile", "install_wsgi_tracer", ["app", "conf"]),
    ("zaqar.transport.wsgi.driver", "Driver._init_middleware", ["self"]),
    ("zaqar.storage.utils", "load_storage_driver",
     ["conf", "cache", "storage_type", "control_mode", "control_driver"]),
    ("zaqar.transport.websocket.protocol", "MessagingProtocol.onMessage",
     ["self", "payload", "isBinary"]),
    ("zaqar.transport.websocket.protocol", "MessagingProtocol._send_response",
     ["self", "resp", "in_binary"]),
    ("zaqar.api.handler", "Handler.process_request", ["self", "req", "protocol"]),
    ("zaqar.storage.pooling", "Catalog.lookup", ["self", "queue", "project"]),
    ("zaqar.storage.pooling", "Catalog._init_driver", ["self", "pool_id", "pool_conf"]),
    ("zaqar.notification.notifier", "NotifierDriver._execute",
     ["self", "s_type", "subscription", "messages", "conf", "retry_policy"]),
    ("zaqar.transport.utils", "to_json", ["obj"]),
    *[(f"zaqar.storage.{store}.messages", f"{cls}.post",
       ["self", QUEUE, "messages", "client_uuid", "project"])
      for store, cls in (("redis", "MessageController"),
                         ("mongodb", "MessageController"),
                         ("mongodb", "FIFOMessageController"))],
    *[(f"zaqar.storage.{store}.messages", f"MessageController.{name}",
       ["self", QUEUE, *middle, "project"])
      for store in ("redis", "mongodb")
      for name, middle in (("list", []), ("get", ["message_id"]),
                           ("bulk_get", ["message_ids"]), ("pop", ["limit"]))],
    *[(f"zaqar.storage.{store}.claims", "ClaimController.create",
       ["self", "queue", "metadata", "project"]) for store in ("redis", "mongodb")],
    ("zaqar.storage.mongodb.messages", "MessageController._collection",
     ["self", "queue_name", "project"]),
]


def _target(module: str, path: str) -> object:
    obj: object = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_this_release_is_one_the_package_declares() -> None:
    assert Requirement(distro.ZAQAR_RELEASES.replace(" ", "")).specifier.contains(
        ZAQAR), (ZAQAR, distro.ZAQAR_RELEASES)


@pytest.mark.parametrize(("module", "path", "leading"), TARGETS,
                         ids=[f"{m.removeprefix('zaqar.')}:{p}" for m, p, _ in TARGETS])
def test_each_patched_function_takes_what_its_hook_passes(
        module: str, path: str, leading: list[str]) -> None:
    params = list(inspect.signature(_target(module, path)).parameters)
    assert len(params) >= len(leading), (ZAQAR, module, path, params)
    for name, wanted in zip(params, leading, strict=False):
        assert name in wanted.split("|"), (ZAQAR, module, path, params)


def test_notifier_driver_init_takes_anything() -> None:
    # deliveries wraps __init__(*args, **kwargs) and passes them through.
    from zaqar.notification.notifier import NotifierDriver

    kinds = {p.kind for p in inspect.signature(NotifierDriver.__init__).parameters
             .values()}
    assert inspect.Parameter.VAR_POSITIONAL in kinds, ZAQAR


SCRIPT = """
import sys
from zaqar.transport.middleware import profile
from zaqar_otel import instrument
own = profile.ProfileWSGIMiddleware if hasattr(profile, "ProfileWSGIMiddleware") \\
    else None
calls = []
instrument.setup = lambda conf: calls.append(conf)
instrument.install()
app = object()
assert profile.install_wsgi_tracer(app, None) is app
profile.setup("the-conf", "zaqar", "host")
assert calls == ["the-conf"], calls
instrument.teardown()
assert profile.install_wsgi_tracer.__module__ == "zaqar.transport.middleware.profile"
print("zaqar's own wsgi tracer" if own else "osprofiler's WsgiMiddleware")
"""


def test_zaqars_profiler_setup_and_wsgi_tracer_are_replaced_on_this_release() -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # Which tracer the release has is the release's business, not the hook's.
    own = int(ZAQAR.split(".")[0]) < 22
    expected = "zaqar's own wsgi tracer" if own else "osprofiler's WsgiMiddleware"
    assert done.stdout.strip().splitlines()[-1] == expected, (ZAQAR, done.stdout)
