"""``zaqar-otel check``: what a zaqar.conf would trace, and where spans would go.

The configuration is loaded the way ``zaqar-server`` loads it (Zaqar's and
osprofiler's options registered on a fresh ``ConfigOpts``, oslo.config's
default files when none are given), resolved by :func:`settings.load`, and
reported as readable lines. Then the collector is probed: OTLP/HTTP gets an
empty export request, OTLP/gRPC a TCP connection. Nothing is patched and no
tracing is started.

Every problem names the option to change. Errors (tracing would be off, or
spans would be lost) make the exit status 1; warnings alone leave it 0.
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from oslo_config import cfg

from zaqar_otel import _sdk, opts, redact, settings, switches
from zaqar_otel._sdk import loggers
from zaqar_otel.propagation import env_guard

DEFAULT_TIMEOUT = 3.0
ENDPOINT_OPTION = settings.ENDPOINT_OPTION
HEADERS_OPTION = f"[{opts.OTEL_GROUP}] headers"
CERTIFICATE_OPTION = f"[{opts.OTEL_GROUP}] certificate"


class UsageError(Exception):
    """Bad command line input (a config file that does not exist): exit 2."""


class SetupError(Exception):
    """The check cannot run here (Zaqar not importable, unreadable file)."""


# -- loading -------------------------------------------------------------------


def load_conf(config_files: Sequence[str] = (),
              config_dirs: Sequence[str] = ()) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with Zaqar's options, parsed as zaqar-server does.

    With neither files nor directories, oslo.config's default locations
    (``/etc/zaqar/zaqar.conf``, ``~/.zaqar/zaqar.conf``, ...) are read, as the
    server reads them.
    """
    for path in config_files:
        if not os.path.isfile(path):
            raise UsageError(f"no such config file: {path}")
    for path in config_dirs:
        if not os.path.isdir(path):
            raise UsageError(f"no such config directory: {path}")
    try:
        from osprofiler import opts as profiler_opts
        from zaqar.conf import opts as zaqar_opts
    except ImportError as exc:
        raise SetupError(
            f"cannot import Zaqar ({exc}); run zaqar-otel check with the Python "
            "environment Zaqar runs in") from None
    conf = cfg.ConfigOpts()
    # As zaqar.bootstrap.Bootstrap.__init__ registers them.
    for group, group_opts in zaqar_opts.list_opts_by_group():
        conf.register_opts(group_opts, group=group)
    profiler_opts.set_defaults(conf)
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    for path in config_dirs:
        args += ["--config-dir", path]
    try:
        conf(args=args, project="zaqar", prog="zaqar-server")
    except cfg.Error as exc:
        raise SetupError(str(exc)) from None
    if not conf.config_file and not conf.config_dir:
        raise UsageError("no zaqar.conf found in oslo.config's default places; "
                         "give one with --config-file")
    return conf


# -- probing the collector -----------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a probe found: ``kind`` is "ok", "status" (an HTTP error status),
    "unreachable", "tls", "not_http", "url" or "headers"."""

    kind: str
    text: str  # "HTTP 200 OK in 3 ms", "Connection refused", ...
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def _elapsed(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.0f} ms"


def _os_error(exc: OSError, timeout: float) -> str:
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    return exc.strerror or str(exc) or type(exc).__name__


def probe_http(url: str, timeout: float, headers: Mapping[str, str] | None = None,
               cafile: str | None = None) -> Probe:
    """POST an empty ExportTraceServiceRequest (b"") to an OTLP/HTTP URL.

    http.client talks to the URL directly: no proxy from the environment.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a "[" in a password
        return Probe("url", f"not a valid URL: {url!r}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Probe("url", f"not an http(s) URL: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return Probe("url", f"no valid port in {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    start = time.monotonic()
    try:
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=cafile)
            conn = http.client.HTTPSConnection(parts.hostname, port,
                                               timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
        try:
            conn.request("POST", path, body=b"", headers={
                **(headers or {}), "Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
    except http.client.HTTPException as exc:
        return Probe("not_http", f"no HTTP answer ({type(exc).__name__})")
    except ssl.SSLError as exc:
        return Probe("tls", _os_error(exc, timeout))
    except OSError as exc:
        return Probe("unreachable", _os_error(exc, timeout))
    except ValueError as exc:
        # http.client's message quotes the header: never show it.
        return Probe("headers", f"a header is not valid HTTP ({type(exc).__name__})")
    status = response.status
    text = f"HTTP {status} {response.reason}".rstrip() + f" in {_elapsed(start)}"
    return Probe("ok" if 200 <= status < 300 else "status", text, status)


def grpc_target(url: str) -> tuple[str, int]:
    """host and port the OTLP/gRPC exporter would connect to (ValueError)."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    return parts.hostname, parts.port or 443  # gRPC's default port


def probe_tcp(host: str, port: int, timeout: float) -> Probe:
    """Open (and close) a TCP connection to host:port."""
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return Probe("unreachable", _os_error(exc, timeout))
    return Probe("ok", f"TCP connection in {_elapsed(start)}")


# -- the report ----------------------------------------------------------------


@dataclass
class Report:
    """Lines printed as they are found, problems summed up at the end."""

    out: Callable[[str], None] = functools.partial(print, flush=True)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Values never printed (HMAC keys, endpoint passwords, header values),
    #: masked wherever they would appear; URL credentials are masked too.
    secrets: redact.Secrets = field(default_factory=redact.Secrets)

    def say(self, text: str) -> None:
        self.out(self.secrets.mask(text))

    def section(self, title: str) -> None:
        self.say("")
        self.say(title)

    def line(self, label: str, value: str) -> None:
        self.say(f"  {label:<26} {value}".rstrip())

    def error(self, text: str) -> None:
        self.errors.append(text)

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def finish(self) -> int:
        if self.errors or self.warnings:
            self.section("Problems")
            for text in self.errors:
                self.say(f"  error:   {text}")
            for text in self.warnings:
                self.say(f"  warning: {text}")
        self.say("")
        if not self.errors and not self.warnings:
            self.say("No problems found.")
        else:
            self.say(f"{_count(self.errors, 'error')}, "
                     f"{_count(self.warnings, 'warning')}.")
        return 1 if self.errors else 0


def _count(items: Sequence[str], word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


def _on(value: object) -> str:
    return "on" if value else "off"


# -- the checks ----------------------------------------------------------------


def run(conf: cfg.ConfigOpts, environ: Mapping[str, str] = os.environ,
        timeout: float = DEFAULT_TIMEOUT,
        out: Callable[[str], None] | None = None) -> int:
    """Report on a parsed zaqar.conf; the exit status (0 ok, 1 errors)."""
    report = Report() if out is None else Report(out)
    # The environment's endpoint passwords and header values, masked in every
    # line (whatever characters they hold), also in the SDK's own warnings.
    report.secrets.remember_environment(environ)
    loggers.hide_secrets(report.secrets)
    report.say("Configuration")
    files = [*conf.config_file, *(f"{d}/*.conf" for d in conf.config_dir)]
    report.line("files", ", ".join(files))
    try:
        loaded = settings.load(conf, environ)
    except settings.ConfigError as exc:
        report.line("tracing", "off: the server would log the error below and "
                               "serve untraced")
        report.error(str(exc))
        return report.finish()
    if not loaded.enabled:
        report.line("tracing", f"off ({loaded.off_because}): nothing would be traced")
        return report.finish()
    report.secrets.remember(*loaded.hmac_keys, shortest=3)
    keys = len(loaded.hmac_keys)
    report.line("tracing", f"on, {keys} HMAC key{'' if keys == 1 else 's'} "
                           f"in [{opts.PROFILER_GROUP}] hmac_keys")
    if settings.STOCK_HMAC_KEY in loaded.hmac_keys:
        report.warning(
            f"[{opts.PROFILER_GROUP}] hmac_keys holds the stock key "
            f"{settings.STOCK_HMAC_KEY!r} (allowed by [{opts.OTEL_GROUP}] "
            "allow_stock_hmac_key): anyone can start traces; set your own key")
    for problem in loaded.problems:  # OTEL_* values the server replaces
        report.warning(problem)
    _propagation(report, environ)
    _what(report, conf, loaded)
    _where(report, loaded, environ, timeout)
    _metrics(report, loaded, environ, timeout)
    return report.finish()


def _propagation(report: Report, environ: Mapping[str, str]) -> None:
    value = environ.get(env_guard.VARIABLE) or ""
    # Importing zaqar_otel already dropped unknown names from this process's
    # own environment; those are remembered.
    unknown = tuple(dict.fromkeys((*env_guard.unknown_in(value),
                                   *env_guard.unknown())))
    used = [n for n in env_guard.names(value) if n not in unknown]
    shown = ",".join(used) or f"{env_guard.DEFAULT} (default)"
    report.line("propagators", shown)
    if unknown:
        report.error(env_guard.problem_text(unknown))


def _what(report: Report, conf: cfg.ConfigOpts, s: settings.Settings) -> None:
    report.section(f"What would be traced ([{opts.PROFILER_GROUP}])")
    for switch in switches.SWITCHES:
        traces = switch.traces
        if switch is switches.REDIS:
            traces += (", a span each" if s.redis_command_spans
                       else ", each an event of the span that sent it")
        report.line(switch.option, f"{_on(s.on(switch)):<4} {traces}")
    ratio = ("only requests with a signed header" if s.sample_ratio == 0 else
             f"signed requests, and {s.sample_ratio * 100:g}% of the others")
    report.line("sample_ratio", f"{s.sample_ratio:<4} {ratio}")
    report.line("honor_w3c_sampled", f"{_on(s.honor_w3c_sampled):<4} " + (
        "a sampled traceparent from any client starts a trace"
        if s.honor_w3c_sampled else "a traceparent alone starts no trace"))
    scheme = s.connection_string.partition("://")[0]
    if scheme not in ("", "messaging", "otlp"):
        report.line("connection_string",
                    f"{scheme}:// also receives the trace points (osprofiler)")
    if not s.on(switches.WSGI):
        report.warning(
            f"[{opts.PROFILER_GROUP}] trace_wsgi_transport = false: no request "
            "would be traced; set it to true")
    _backends(report, conf, s)


def _backends(report: Report, conf: cfg.ConfigOpts, s: settings.Settings) -> None:
    try:
        message_store = str(conf.drivers.message_store)
        management_store = str(conf.drivers.management_store)
        pooling = bool(conf.pooling)
    except (ValueError, cfg.Error) as exc:
        report.error(f"[drivers] / [DEFAULT] pooling: {exc}")
        return
    report.line("stores", f"message_store = {message_store}, management_store = "
                          f"{management_store}, pooling {_on(pooling)}")
    stores = f"[drivers] message_store = {message_store}, management_store = " \
             f"{management_store}"
    for switch, family, name in ((switches.REDIS, "redis", "Redis"),
                                 (switches.MONGODB, "mongodb", "MongoDB")):
        # With pooling, pools may live on any backend: no verdict.
        if (s.on(switch) and not pooling
                and family not in (message_store, management_store)):
            report.warning(
                f"[{opts.PROFILER_GROUP}] {switch.option} = true, but no store is "
                f"{name} ({stores}, pooling off): nothing to trace; set it to "
                "false")
    if s.on(switches.SQLALCHEMY) and management_store != "sqlalchemy":
        report.warning(
            f"[{opts.PROFILER_GROUP}] trace_sqlalchemy = true, but [drivers] "
            f"management_store = {management_store}: nothing to trace; set it to "
            "false")
    if s.on(switches.POOLING) and not pooling:
        report.warning(
            f"[{opts.PROFILER_GROUP}] trace_pooling = true, but [DEFAULT] "
            "pooling = false: nothing to trace; set it to false")


def _from_env(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        if value := (environ.get(name) or "").strip():
            return name, value
    return None


def _headers(s: settings.Settings,
             environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """Headers the exporter would send, and a description without them."""
    option = s.exporter_args.get("headers")
    if option:
        found = dict(option)  # type: ignore[call-overload]
        return found, f"{_count(list(found), 'header')} set in {HEADERS_OPTION}"
    env = _from_env(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "OTEL_EXPORTER_OTLP_HEADERS")
    if env is None:
        return {}, "none"
    from opentelemetry.util.re import parse_env_headers

    found = parse_env_headers(env[1], liberal=True)
    return dict(found), f"{_count(list(found), 'header')} set in ${env[0]}"


def _where(report: Report, s: settings.Settings, environ: Mapping[str, str],
           timeout: float) -> None:
    report.section(f"Where spans would go ([{opts.OTEL_GROUP}])")
    # The fast path, or the SDK's own ([opentelemetry] fast_path), and why.
    report.line("fast_path", f"{s.fast_path:<4} spans take the "
                f"{_sdk.choose(s).describe()} path")
    if s.exporter == "console":
        report.line("exporter", "console: spans printed on the server's stdout")
        return
    if s.exporter == "none":
        report.line("exporter", "none: spans created, nothing exported")
        report.warning(f"[{opts.OTEL_GROUP}] exporter = none: no span would reach "
                       "a collector; set it to otlp_http or otlp_grpc")
        return
    endpoint = settings.endpoint(s, environ)
    report.line("exporter", s.exporter)
    report.line("endpoint", f"{endpoint.url}  (from {endpoint.source})")
    headers, described = _headers(s, environ)
    report.secrets.remember(*headers.values(), shortest=3)
    report.line("headers", described)
    errors = len(report.errors)
    cafile = _certificate(report, s, environ, endpoint.url)
    if len(report.errors) > errors:
        report.line("collector", "not probed: fix the certificate first")
        return
    fix = ENDPOINT_OPTION if endpoint.source == ENDPOINT_OPTION else (
        f"{ENDPOINT_OPTION} (now from {endpoint.source})"
        if endpoint.source != "default"
        else f"{ENDPOINT_OPTION} (unset: the default applies)")
    if s.exporter == "otlp_http":
        probe = probe_http(endpoint.url, timeout, headers, cafile)
        report.line("collector", _PROBE_LINES[probe.kind].format(probe.text))
        if not probe.ok:
            report.error(_http_problem(probe, endpoint.url, fix))
        return
    try:
        host, port = grpc_target(endpoint.url)
    except ValueError as exc:
        report.line("collector", "not probed")
        report.error(f"{exc}: set {fix}")
        return
    probe = probe_tcp(host, port, timeout)
    if probe.ok:
        report.line("collector", f"reachable at {host}:{port} ({probe.text}; "
                                 "gRPC itself not tried)")
    else:
        report.line("collector", f"unreachable at {host}:{port}: {probe.text}")
        report.error(f"the collector at {host}:{port} is unreachable "
                     f"({probe.text}): start it, or set {fix}")


def _metrics(report: Report, s: settings.Settings, environ: Mapping[str, str],
             timeout: float) -> None:
    report.section(f"Metrics ([{opts.OTEL_GROUP}] metrics)")
    m = s.metrics
    if m is None:
        report.line("metrics", f"off ({s.metrics_off_because})")
        if s.metrics_problem:
            report.error(f"metrics would stay off: {s.metrics_off_because}")
        return
    queues = (f"up to {m.max_queues} per process, then '_other'" if m.per_queue
              else f"no queue attribute ([{opts.OTEL_GROUP}] metrics_per_queue)")
    report.line("metrics", f"on, every request; exported every "
                           f"{m.export_interval_millis / 1000:g} s")
    report.line("queues", queues + ("; with project ids" if m.per_project else ""))
    report.line("exemplars", m.exemplar_filter)
    if m.exporter in ("console", "none"):
        report.line("exporter", m.exporter)
        return
    endpoint = settings.metrics_endpoint(s, environ)
    assert endpoint is not None  # metrics are on
    report.line("exporter", m.exporter)
    report.line("endpoint", f"{endpoint.url}  (from {endpoint.source})")
    if m.exporter != "otlp_http":
        return  # the gRPC port is the spans' one, probed above
    headers, _ = _headers(s, environ)
    https = endpoint.url.startswith("https://")
    cafile = s.exporter_args.get("certificate_file") if https else None
    probe = probe_http(endpoint.url, timeout, headers,
                       str(cafile) if cafile else None)
    report.line("collector", _PROBE_LINES[probe.kind].format(probe.text))
    if probe.status in (404, 405):
        report.error(f"no OTLP metrics receiver at {endpoint.url} ({probe.text}): "
                     "the collector takes traces only (Jaeger?); point "
                     f"{ENDPOINT_OPTION} at an OpenTelemetry Collector, or set "
                     f"[{opts.OTEL_GROUP}] metrics = false")
    elif not probe.ok:
        report.error(_http_problem(probe, endpoint.url, ENDPOINT_OPTION))


_PROBE_LINES = {
    "ok": "answers: {}",
    "status": "answers with an error: {}",
    "unreachable": "unreachable: {}",
    "tls": "TLS failed: {}",
    "not_http": "answers, but not as HTTP: {}",
    "url": "not probed: {}",
    "headers": "not probed: {}",
}


def _http_problem(probe: Probe, url: str, fix: str) -> str:
    if probe.kind == "unreachable":
        return (f"the collector at {url} does not answer ({probe.text}): start "
                f"it, or set {fix}")
    if probe.kind == "tls":
        return (f"TLS with {url} failed ({probe.text}): set {CERTIFICATE_OPTION} "
                "to the CA bundle of the collector's certificate")
    if probe.kind == "not_http":
        return (f"{url} does not speak HTTP ({probe.text}); a gRPC port? set "
                f"{fix}, or [{opts.OTEL_GROUP}] exporter = otlp_grpc")
    if probe.kind == "headers":
        return f"{probe.text}: check {HEADERS_OPTION}"
    if probe.kind == "url":
        return f"{probe.text}: set {fix}"
    if probe.status in (401, 403):
        return (f"the collector at {url} refuses the export ({probe.text}): "
                f"check {HEADERS_OPTION}")
    if probe.status in (404, 405):
        return (f"no OTLP traces receiver at {url} ({probe.text}): set {fix} "
                "to the collector's base URL, e.g. http://collector:4318")
    if probe.status in (400, 415):
        return (f"{url} does not take OTLP/HTTP protobuf ({probe.text}): set "
                f"{fix}, or [{opts.OTEL_GROUP}] exporter")
    return (f"the collector at {url} fails ({probe.text}): see its log, or set "
            f"{fix}")


def _certificate(report: Report, s: settings.Settings, environ: Mapping[str, str],
                 url: str) -> str | None:
    https = url.startswith("https://")
    if s.exporter_args.get("certificate_file"):
        path, source = str(s.exporter_args["certificate_file"]), CERTIFICATE_OPTION
    else:
        env = _from_env(environ, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                        "OTEL_EXPORTER_OTLP_CERTIFICATE")
        if env is None:
            report.line("certificate", "system CAs" if https else "none")
            return None
        source, path = f"${env[0]}", env[1]
        if not os.path.isfile(path):
            report.line("certificate", f"{path} (from {source}): no such file")
            report.error(f"{source} names no file ({path!r}): set "
                         f"{CERTIFICATE_OPTION} to the collector's CA bundle")
            return None
    if not https:
        report.line("certificate", f"{path} (from {source}, unused: the endpoint "
                                   "is not https)")
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ValueError) as exc:
        report.line("certificate", f"{path} (from {source}): unusable")
        report.error(f"{source}: {path} is not a PEM CA bundle ({exc}): set "
                     f"{CERTIFICATE_OPTION} to the collector's CA bundle")
        return None
    report.line("certificate", f"{path} (from {source})")
    return path
