"""The functions of Zaqar's start-up the hook replaces.

``install(hook, setup)`` replaces, with ``hook.patches``:

* ``zaqar.transport.middleware.profile.setup``, Zaqar's OSProfiler start-up,
  by ``setup(conf)``: no tracing unless enabled, and no error for the stock
  ``messaging://`` connection string;
* ``profile.install_wsgi_tracer`` by nothing: ``TracingMiddleware``,
  outermost, replaces osprofiler's;
* ``zaqar.transport.wsgi.driver.Driver._init_middleware``, which builds the
  WSGI app: the messaging middleware goes into Zaqar's falcon app, and
  ``TracingMiddleware`` around the whole, with what the set-up in force
  (``hook.running``) built;
* ``zaqar.storage.utils.load_storage_driver``: Zaqar 23 returns None (and
  the server dies) when profiling is on but ``trace_message_store`` /
  ``trace_management_store`` is off; such a driver is loaded untraced, as
  Zaqar means to, by a copy of Zaqar's own loader (``_load_untraced``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from zaqar_otel import switches
from zaqar_otel._sdk import layout
from zaqar_otel.entry import http_attributes, wsgi_middleware
from zaqar_otel.hook.state import Hook
from zaqar_otel.messaging import operations

LOG = logging.getLogger(__name__)


def install(hook: Hook, setup: Callable[[cfg.ConfigOpts], object]) -> None:
    """Replace Zaqar's start-up functions (see the module); idempotent."""
    from zaqar.storage import utils as storage_utils
    from zaqar.transport.middleware import profile
    from zaqar.transport.wsgi import driver

    patches = hook.patches
    patches.patch(profile, "setup", functools.partial(_profile_setup, setup))
    patches.patch(profile, "install_wsgi_tracer", _install_wsgi_tracer)
    patches.patch(driver.Driver, "_init_middleware",
                  functools.partial(_init_middleware, hook))
    patches.patch(storage_utils, "load_storage_driver", _load_storage_driver)


def _profile_setup(setup: Callable[[cfg.ConfigOpts], object],
                   original: Callable[..., Any]) -> Callable[..., Any]:
    def profile_setup(conf: cfg.ConfigOpts, binary: str, host: str) -> None:
        # Instead of osprofiler's init_from_conf: no tracing unless enabled,
        # and no error for the stock messaging:// connection string.
        setup(conf)

    return profile_setup


def _install_wsgi_tracer(original: Callable[..., Any]) -> Callable[..., Any]:
    def install_wsgi_tracer(app: Any, conf: cfg.ConfigOpts) -> Any:
        return app  # TracingMiddleware, outermost, replaces osprofiler's

    return install_wsgi_tracer


def _init_middleware(hook: Hook, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def init_middleware(driver: Any) -> None:
        falcon_app = driver.app
        running = hook.running
        tracer, entry = (running.tracer, running.entry) if running else (None, None)
        traced = bool(running and running.settings.on(switches.WSGI)
                      and tracer and entry)
        recorder = running.metrics.recorder if running and running.metrics else None
        if traced or recorder is not None:
            falcon_app.add_middleware(operations.MessagingSpans(
                tracer if traced else None, metrics=recorder))
        original(driver)
        if not traced and recorder is None:
            return
        # Metrics alone (trace_wsgi_transport = false): measured, not traced.
        conventions = running.conventions if running else layout.OLD_CONVENTIONS
        driver.app = wsgi_middleware.TracingMiddleware(
            driver.app, entry if traced else None,
            wsgi_middleware.falcon_route_of(falcon_app), metrics=recorder,
            http=http_attributes.HttpAttributes(conventions) if traced else None)

    return init_middleware


def _load_storage_driver(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def load_storage_driver(conf: cfg.ConfigOpts, cache: Any, storage_type: Any = None,
                            control_mode: bool = False,
                            control_driver: Any = None) -> Any:
        # Zaqar 23 returns None (and the server dies) when profiling is on
        # but trace_message_store / trace_management_store is off: load the
        # driver untraced in that case, as Zaqar means to.
        traced = (conf.profiler.trace_management_store if control_mode
                  else conf.profiler.trace_message_store)
        if not conf.profiler.enabled or traced:
            return original(conf, cache, storage_type, control_mode, control_driver)
        return _load_untraced(conf, cache, storage_type, control_mode, control_driver)

    return load_storage_driver


def _load_untraced(conf: cfg.ConfigOpts, cache: Any, storage_type: Any,
                   control_mode: bool, control_driver: Any) -> Any:
    """Zaqar's ``load_storage_driver`` for an untraced store (its own code
    returns None there): the same driver, loaded the same way."""
    import stevedore
    from zaqar.common import errors

    mode = "control" if control_mode else "data"
    storage_type = storage_type or (conf["drivers"].management_store if control_mode
                                    else conf["drivers"].message_store)
    args = (conf, cache) if control_driver is None else (conf, cache, control_driver)
    try:
        return stevedore.DriverManager(
            namespace=f"zaqar.{mode}.storage", name=storage_type,
            invoke_on_load=True, invoke_args=args).driver
    except Exception as exc:
        LOG.exception('Failed to load "zaqar.%s.storage" driver for "%s"',
                      mode, storage_type)
        raise errors.InvalidDriver(exc) from exc
