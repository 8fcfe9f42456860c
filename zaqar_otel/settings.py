"""zaqar.conf and ``OTEL_*`` variables resolved into one validated snapshot.

Precedence, for every setting: an option set in zaqar.conf, else the standard
``OTEL_*`` variable, else the default. Variables that the SDK's exporters and
span processor read themselves (endpoint, headers, certificate, timeout,
compression, ``OTEL_BSP_*``) are left to them: only options that are set are
passed on, so the SDK applies its own documented fallbacks. Every ``OTEL_*``
number the SDK reads is checked here first (``SDK_NUMBERS``): a value that
cannot work (``OTEL_EXPORTER_OTLP_TIMEOUT=0`` would stop every export) is one
line in ``Settings.problems`` and the SDK is handed its default instead.
The span limits are always handed over whole (``Settings.span_limits``), with
an attribute value length limit by default.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from oslo_config import cfg

from zaqar_otel import opts, switches
from zaqar_otel.propagation import codec, number_guard

STOCK_HMAC_KEY = "SECRET_KEY"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
TRACES_PATH, METRICS_PATH = "/v1/traces", "/v1/metrics"
#: The OTel specification's default of OTEL_METRIC_EXPORT_INTERVAL.
DEFAULT_METRIC_EXPORT_INTERVAL = 60000
EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")
ENDPOINT_OPTION = f"[{opts.OTEL_GROUP}] endpoint"
#: Why tracing is off, in ``Settings.off_because``.
OFF_BY_OPTION = f"[{opts.PROFILER_GROUP}] enabled = false"
OFF_BY_SDK_DISABLED = "OTEL_SDK_DISABLED=true"


class ConfigError(ValueError):
    """A setting that cannot work; the message names the option to change."""


@dataclass(frozen=True)
class MetricsSettings:
    """How Zaqar's metrics are kept and exported (``[opentelemetry] metrics*``).

    :param exporter: ``otlp_http``, ``otlp_grpc``, ``console`` or ``none``.
    :param exporter_args: keyword arguments for the SDK's metric exporter,
        only for options set in zaqar.conf (the endpoint with /v1/metrics).
    :param export_interval_millis: between two exports.
    :param per_queue: messaging metrics carry the queue name.
    :param max_queues: distinct queues (or project/queue pairs) with series
        of their own; the rest are counted as ``_other``.
    :param per_project: messaging metrics carry the project id.
    :param exemplar_filter: ``OTEL_METRICS_EXEMPLAR_FILTER``.
    """

    exporter: str = "otlp_http"
    exporter_args: Mapping[str, object] = field(default_factory=dict)
    export_interval_millis: int = DEFAULT_METRIC_EXPORT_INTERVAL
    per_queue: bool = True
    max_queues: int = 100
    per_project: bool = False
    exemplar_filter: str = "trace_based"


@dataclass(frozen=True)
class Settings:
    enabled: bool
    hmac_keys: tuple[str, ...] = ()
    #: The ``[profiler] trace_*`` switches that are on (see ``on``).
    switched_on: frozenset[switches.Switch] = frozenset()
    connection_string: str = ""
    exporter: str = "otlp_http"
    # Keyword arguments for the exporter, only for options set in zaqar.conf.
    exporter_args: Mapping[str, object] = field(default_factory=dict)
    # Keyword arguments for BatchSpanProcessor, likewise.
    batch_args: Mapping[str, int] = field(default_factory=dict)
    service_name: str | None = None
    sample_ratio: float = 0.0
    honor_w3c_sampled: bool = False
    shutdown_timeout: float = 5.0
    #: When ``enabled`` is False: which setting turned tracing off.
    off_because: str = OFF_BY_OPTION
    #: Zaqar's metrics; None when they are off.
    metrics: MetricsSettings | None = None
    #: When ``metrics`` is None: why, naming the setting.
    metrics_off_because: str = ""
    #: True when metrics were asked for but a setting keeps them off.
    metrics_problem: bool = False
    #: Keyword arguments for the SDK's SpanLimits, every one given (so that
    #: SpanLimits reads no variable itself): see ``_span_limits``.
    span_limits: Mapping[str, int] = field(default_factory=dict)
    #: Bytes of encoded spans per export request, and held for export.
    max_export_batch_bytes: int = 1048576
    max_queue_bytes: int = 8388608
    #: One line each: an ``OTEL_*`` value that cannot work, and what is used
    #: instead (the SDK's default). Logged at set-up, reported by ``check``.
    problems: tuple[str, ...] = ()
    #: ``[opentelemetry] fast_path``: ``auto`` or ``off`` (``zaqar_otel._sdk``
    #: decides what ``auto`` comes to), and the setting it comes from.
    fast_path: str = "auto"
    fast_path_source: str = "default"
    #: ``[profiler] redis_command_spans``: with ``trace_redis``, a span per
    #: Redis command (True) or an event on the span that sent it (False).
    redis_command_spans: bool = False

    def on(self, switch: switches.Switch) -> bool:
        """Whether ``switch`` (one of ``switches.SWITCHES``) is on."""
        return switch in self.switched_on


# oslo.config names the file of a bad value as a LocationInfo repr.
_LOCATION = re.compile(r"from LocationInfo\(location=[^)]*\)>?, detail='([^']*)'\)")


# Options whose value is a secret: oslo.config's error quotes the value (the
# endpoint's whole authority, password included), so theirs is not repeated.
_SECRET = frozenset((opts.OTEL_GROUP, o.name) for o in opts.otel_opts if o.secret)
_FILE = re.compile(r"Value for option \S+ (?:from LocationInfo\(location=[^)]*\)>?, "
                   r"detail='([^']*)'\)|in (.*?)) is not valid")


def _get(conf: cfg.ConfigOpts, group: str, name: str) -> object:
    try:
        return conf[group][name]
    except (ValueError, cfg.Error) as exc:
        if (group, name) in _SECRET:
            found = _FILE.search(str(exc))
            where = f" in {found.group(1) or found.group(2)}" if found else ""
            raise ConfigError(
                f"[{group}] {name}: the value{where} is not valid (not shown: it "
                f"may hold a password; in a URL's password, write @ / ? # % "
                f"[ ] and space as %40 %2F %3F %23 %25 %5B %5D %20)") from None
        # oslo.config validates on access; say which option and file, in words.
        message = _LOCATION.sub(r"in \1", str(exc))
        raise ConfigError(f"[{group}] {name}: {message}") from None


def _exporter(value: object, environ: Mapping[str, str]) -> str:
    if value:
        return str(value)
    name = _env(environ, "OTEL_TRACES_EXPORTER") or "otlp"
    if name == "otlp":
        return _otlp_exporter(environ, "TRACES")
    if name in ("console", "none"):
        return name
    raise ConfigError(
        f"OTEL_TRACES_EXPORTER={name!r} is not supported; set "
        f"[{opts.OTEL_GROUP}] exporter to one of {', '.join(opts.EXPORTERS)}"
    )


def _endpoint(value: str, exporter: str, signal: str = TRACES_PATH) -> str:
    url = urlparse(value)
    if not url.hostname:
        raise ConfigError(f"[{opts.OTEL_GROUP}] endpoint: no host in {value!r}")
    if exporter != "otlp_http":
        return value
    if url.path in ("", "/"):
        # Like OTEL_EXPORTER_OTLP_ENDPOINT: a base URL gets the signal path.
        return value.rstrip("/") + signal
    if signal == METRICS_PATH:
        # One endpoint option serves both signals: a traces URL names its
        # collector, whose metrics path is beside it; any other path is a
        # prefix (a gateway's), under which the signal path goes.
        base = url.path.rstrip("/").removesuffix(TRACES_PATH)
        return url._replace(path=base + METRICS_PATH).geturl()
    return value


def _exporter_args(conf: cfg.ConfigOpts, exporter: str,
                   signal: str = TRACES_PATH) -> dict[str, object]:
    get = functools.partial(_get, conf, opts.OTEL_GROUP)
    args: dict[str, object] = {}
    if get("endpoint"):
        args["endpoint"] = _endpoint(str(get("endpoint")), exporter, signal)
    if get("headers"):
        pairs = [item.partition("=") for item in str(get("headers")).split(",")]
        if any(not key.strip() or not sep for key, sep, _ in pairs):
            raise ConfigError(
                f"[{opts.OTEL_GROUP}] headers: expected key1=value1,key2=value2")
        args["headers"] = {k.strip(): v.strip() for k, _, v in pairs}
    if get("certificate"):
        path = str(get("certificate"))
        if not os.path.isfile(path):
            raise ConfigError(f"[{opts.OTEL_GROUP}] certificate: no file {path!r}")
        args["certificate_file"] = path
    if get("timeout") is not None:
        args["timeout"] = float(get("timeout"))  # type: ignore[arg-type]
    if get("compression"):
        if exporter == "otlp_grpc" and get("compression") == "deflate":
            raise ConfigError(
                f"[{opts.OTEL_GROUP}] compression: deflate is otlp_http only")
        args["compression"] = get("compression")
    if get("insecure") is not None and exporter == "otlp_grpc":
        args["insecure"] = get("insecure")
    return args


def _env(environ: Mapping[str, str], name: str) -> str:
    # An empty variable counts as unset (OTel specification).
    return (environ.get(name) or "").strip().lower()


def _otlp_exporter(environ: Mapping[str, str], signal: str) -> str:
    """The OTLP exporter of ``signal`` (``TRACES``, ``METRICS``):
    ``OTEL_EXPORTER_OTLP_<signal>_PROTOCOL``, else
    ``OTEL_EXPORTER_OTLP_PROTOCOL``; ``grpc`` or, by default, http/protobuf."""
    protocol = (_env(environ, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
                or _env(environ, "OTEL_EXPORTER_OTLP_PROTOCOL"))
    return "otlp_grpc" if protocol == "grpc" else "otlp_http"


def _fast_path(option: object, environ: Mapping[str, str],
               problems: list[str]) -> tuple[str, str]:
    """``[opentelemetry] fast_path``, else its variable, else ``auto``; and
    where it comes from."""
    if option:
        return str(option), f"[{opts.OTEL_GROUP}] fast_path"
    value = _env(environ, opts.FAST_PATH_VARIABLE)
    if not value:
        return "auto", "default"
    if value not in opts.FAST_PATH_CHOICES:
        problems.append(f"{opts.FAST_PATH_VARIABLE}={value!r} is not one of "
                        f"{', '.join(opts.FAST_PATH_CHOICES)}; auto is used")
        return "auto", "default"
    return value, opts.FAST_PATH_VARIABLE


class _MetricsOff(Exception):
    """Metrics stay off for this reason (tracing is not affected)."""

    def __init__(self, reason: str, problem: bool) -> None:
        super().__init__(reason)
        self.reason, self.problem = reason, problem


def _metrics_exporter(option: object, environ: Mapping[str, str],
                      traces_exporter: str) -> str:
    if option:  # [opentelemetry] exporter serves both signals
        return str(option)
    name = _env(environ, "OTEL_METRICS_EXPORTER")
    if not name:
        return traces_exporter
    if name == "otlp":
        return _otlp_exporter(environ, "METRICS")
    if name in ("console", "none"):
        return name
    # prometheus and others need a pull endpoint zaqar-otel does not serve.
    raise _MetricsOff(
        f"OTEL_METRICS_EXPORTER={name!r} is not supported (otlp, console or "
        f"none); set [{opts.OTEL_GROUP}] exporter or the variable", problem=True)


def _metrics(conf: cfg.ConfigOpts, environ: Mapping[str, str],
             traces_exporter: str,
             numbers: Mapping[str, _Read] | None = None) -> MetricsSettings:
    """The metrics settings; raises _MetricsOff when they are off."""
    get = functools.partial(_get, conf, opts.OTEL_GROUP)
    asked = get("metrics")
    variable = _env(environ, "OTEL_METRICS_EXPORTER")
    if asked is None:
        # Off unless the operator asked: the endpoint may take traces only
        # (Jaeger's does), and would refuse every export.
        if not variable or variable == "none":
            raise _MetricsOff(
                f"[{opts.OTEL_GROUP}] metrics is unset, and so is "
                "OTEL_METRICS_EXPORTER" if not variable
                else "OTEL_METRICS_EXPORTER=none",
                problem=False)
        if variable not in ("otlp", "console"):
            # Meant for another SDK's exporter (prometheus): not ours to guess.
            raise _MetricsOff(
                f"OTEL_METRICS_EXPORTER={variable!r} is not supported (otlp, "
                f"console or none); set [{opts.OTEL_GROUP}] metrics = true to "
                f"export with [{opts.OTEL_GROUP}] exporter", problem=True)
    elif not asked:
        raise _MetricsOff(f"[{opts.OTEL_GROUP}] metrics = false", problem=False)
    exporter = _metrics_exporter(get("exporter"), environ, traces_exporter)
    exemplars = _env(environ, "OTEL_METRICS_EXEMPLAR_FILTER") or "trace_based"
    if exemplars not in EXEMPLAR_FILTERS:
        raise _MetricsOff(
            f"OTEL_METRICS_EXEMPLAR_FILTER={exemplars!r} is not one of "
            f"{', '.join(EXEMPLAR_FILTERS)}", problem=True)
    if numbers is None:
        numbers = sdk_numbers(environ)
    interval = get("metrics_export_interval")
    if interval is None:
        # A bad value: the default, and a line in Settings.problems.
        read = numbers["OTEL_METRIC_EXPORT_INTERVAL"].value
        interval = int(read) if read is not None else DEFAULT_METRIC_EXPORT_INTERVAL
    exporter_args = _exporter_args(conf, exporter, METRICS_PATH)
    _timeout(exporter_args, numbers, "METRICS")
    return MetricsSettings(
        exporter=exporter,
        exporter_args=exporter_args,
        export_interval_millis=max(int(str(interval)), 100),
        per_queue=bool(get("metrics_per_queue")),
        max_queues=int(str(get("metrics_max_queues"))),
        per_project=bool(get("metrics_per_project")),
        exemplar_filter=exemplars,
    )


#: The default attribute value length limit, in characters (the OTel
#: specification's default is none). Zaqar's own values are far shorter:
#: SQL statements of its SQLAlchemy store a few hundred characters, routes
#: and queue names under 100; the longest, an exception event's stack
#: trace through falcon and a storage driver, a few thousand.
DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT = 8192
#: The OTel specification's default of every span, event and link count limit.
DEFAULT_COUNT_LIMIT = 128
_UNSET_LIMIT = -1  # SpanLimits.UNSET: no limit (the variable's value "unset")


@dataclass(frozen=True)
class _Number:
    """An ``OTEL_*`` number the SDK reads: what it is, its default, its
    least valid value."""

    variable: str
    what: str
    default: float
    least: float
    integer: bool = True
    above: bool = False  # ``least`` itself is not valid
    may_be_unset: bool = False  # "unset" is valid (SpanLimits: no limit)


_TIMEOUT = dict(what="a number of seconds above 0", default=10.0, least=0.0,
                integer=False, above=True)
_COUNT = dict(what="a whole number of 0 or more (or 'unset')",
              default=DEFAULT_COUNT_LIMIT, least=0, may_be_unset=True)
SDK_NUMBERS = tuple(_Number(variable, **kind) for variable, kind in (  # type: ignore[arg-type]
    ("OTEL_EXPORTER_OTLP_TIMEOUT", _TIMEOUT),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", _TIMEOUT),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", _TIMEOUT),
    ("OTEL_BSP_SCHEDULE_DELAY", dict(what="a whole number of milliseconds "
                                     "above 0", default=5000, least=1)),
    ("OTEL_BSP_MAX_QUEUE_SIZE", dict(what="a whole number above 0",
                                     default=2048, least=1)),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", dict(what="a whole number above 0",
                                            default=512, least=1)),
    ("OTEL_BSP_EXPORT_TIMEOUT", dict(what="a whole number of milliseconds",
                                     default=30000, least=0)),
    ("OTEL_METRIC_EXPORT_INTERVAL", dict(
        what="a whole number of milliseconds above 0",
        default=DEFAULT_METRIC_EXPORT_INTERVAL, least=1)),
    ("OTEL_ATTRIBUTE_COUNT_LIMIT", _COUNT),
    ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", _COUNT),
    ("OTEL_SPAN_EVENT_COUNT_LIMIT", _COUNT),
    ("OTEL_SPAN_LINK_COUNT_LIMIT", _COUNT),
    ("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", _COUNT),
    ("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", _COUNT),
    ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", dict(
        _COUNT, default=DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT,
        what="a whole number of characters above 0 (or 'unset')", least=1)),
    ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", dict(
        _COUNT, default=DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT,
        what="a whole number of characters above 0 (or 'unset')", least=1)),
))


@dataclass(frozen=True)
class _Read:
    """An ``OTEL_*`` number as read: None when the variable is unset (or
    empty); ``explicit`` when the SDK must be given the value instead of
    reading the variable (it would fail on it or misuse it)."""

    value: float | None
    explicit: bool = False


def sdk_numbers(environ: Mapping[str, str],
                problems: list[str] | None = None) -> dict[str, _Read]:
    """Every ``SDK_NUMBERS`` variable, read; a line in ``problems`` for each
    set to a value that cannot work (the default is used instead)."""
    out = {}
    for number in SDK_NUMBERS:
        raw = environ.get(number.variable)
        if raw is None and number.variable == number_guard.VARIABLE:
            raw = number_guard.noted(environ)  # moved aside before the SDK's import
        if raw is None:
            out[number.variable] = _Read(None)
            continue
        text = raw.strip().lower()
        if not text:  # empty counts as unset; the SDK would fail on it
            out[number.variable] = _Read(None, explicit=True)
            continue
        if number.may_be_unset and text == "unset":
            out[number.variable] = _Read(_UNSET_LIMIT, explicit=True)
            continue
        try:
            value: float = int(text) if number.integer else float(text)
            good = value == value and value not in (float("inf"), float("-inf")) and (
                value > number.least if number.above else value >= number.least)
        except ValueError:
            good = False
        if good:
            out[number.variable] = _Read(value)
            continue
        default = (int(number.default) if number.default == int(number.default)
                   else number.default)
        if problems is not None:
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            problems.append(f"{number.variable}={shown!r} is not {number.what}; "
                            f"the default {default} is used")
        out[number.variable] = _Read(number.default, explicit=True)
    return out


def _first(numbers: Mapping[str, _Read], *variables: str) -> _Read:
    """The first of ``variables`` that is set (its value), else unset."""
    for variable in variables:
        read = numbers[variable]
        if read.value is not None:
            return read
    return _Read(None, explicit=any(numbers[v].explicit for v in variables))


def _timeout(args: dict[str, object], numbers: Mapping[str, _Read],
             signal: str) -> None:
    """The exporter's timeout, given when a variable it reads is not usable
    (``OTEL_EXPORTER_OTLP_TIMEOUT=0`` would stop every export)."""
    if "timeout" in args:
        return
    read = _first(numbers, f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT",
                  "OTEL_EXPORTER_OTLP_TIMEOUT")
    if read.explicit:
        args["timeout"] = float(read.value if read.value is not None else 10.0)


def _span_limits(length_option: object,
                 numbers: Mapping[str, _Read]) -> dict[str, int]:
    """SpanLimits' keyword arguments, all of them: the option, else the
    variables as the SDK reads them, else the defaults (the length limit's
    is zaqar-otel's, ``DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT``)."""
    def count(*variables: str) -> int:
        value = _first(numbers, *variables).value
        return int(value) if value is not None else DEFAULT_COUNT_LIMIT

    if length_option is not None:
        length = span_length = int(str(length_option))
    else:
        found = numbers["OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"].value
        length = (int(found) if found is not None
                  else DEFAULT_ATTRIBUTE_VALUE_LENGTH_LIMIT)
        found = numbers["OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"].value
        span_length = int(found) if found is not None else length
    general = "OTEL_ATTRIBUTE_COUNT_LIMIT"
    return {
        "max_attributes": count(general),
        "max_events": count("OTEL_SPAN_EVENT_COUNT_LIMIT"),
        "max_links": count("OTEL_SPAN_LINK_COUNT_LIMIT"),
        "max_span_attributes": count("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", general),
        "max_event_attributes": count("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", general),
        "max_link_attributes": count("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", general),
        "max_attribute_length": length,
        "max_span_attribute_length": span_length,
    }


def _service_name(option: object, environ: Mapping[str, str],
                  problems: list[str]) -> str | None:
    """The option; else None (the SDK reads ``OTEL_SERVICE_NAME``) unless
    that variable is not valid UTF-8: each byte that is not (surrogate-
    escaped in ``os.environ``) becomes U+FFFD, so that spans and metrics
    carry one and the same name."""
    if option:
        return str(option)
    value = (environ.get("OTEL_SERVICE_NAME") or "").strip()
    if not value:
        return None  # the SDK's resource detection, then "zaqar"
    try:
        clean = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that no byte escapes
        clean = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c
                        for c in value)
    if clean == value:
        return None  # the SDK reads it, as it is
    problems.append(f"OTEL_SERVICE_NAME holds bytes that are not UTF-8; "
                    f"service.name is {clean!r} for spans and metrics")
    return clean


def _hmac_keys(conf: cfg.ConfigOpts) -> tuple[str, ...]:
    keys = tuple(codec.split_keys(
        str(_get(conf, opts.PROFILER_GROUP, "hmac_keys") or "")))
    if not keys:
        raise ConfigError(
            "[profiler] hmac_keys is empty: tracing needs at least one key, the "
            "one clients pass to --os-profile")
    if STOCK_HMAC_KEY in keys and not _get(
            conf, opts.OTEL_GROUP, "allow_stock_hmac_key"):
        raise ConfigError(
            f"[profiler] hmac_keys holds the stock key {STOCK_HMAC_KEY!r}, which "
            "lets anyone start traces; set your own key, or "
            f"[{opts.OTEL_GROUP}] allow_stock_hmac_key = true")
    return keys


def load(conf: cfg.ConfigOpts, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from a parsed zaqar.conf; raises ConfigError naming the option.

    Zaqar and osprofiler must have registered their ``[profiler]`` options.
    """
    opts.register_opts(conf)
    if not _get(conf, opts.PROFILER_GROUP, "enabled"):
        return Settings(enabled=False, off_because=OFF_BY_OPTION)
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Settings(enabled=False, off_because=OFF_BY_SDK_DISABLED)
    get = functools.partial(_get, conf, opts.OTEL_GROUP)
    profiler = functools.partial(_get, conf, opts.PROFILER_GROUP)
    exporter = _exporter(get("exporter"), environ)
    switched_on = frozenset(switch for switch in switches.SWITCHES
                            if profiler(switch.option))
    problems: list[str] = []
    numbers = sdk_numbers(environ, problems)
    try:
        metrics: dict[str, Any] = {
            "metrics": _metrics(conf, environ, exporter, numbers)}
    except _MetricsOff as off:
        metrics = {"metrics_off_because": off.reason, "metrics_problem": off.problem}
    exporter_args = _exporter_args(conf, exporter)
    _timeout(exporter_args, numbers, "TRACES")
    batch_args = {
        key: int(str(get(name)))
        for key, name in (
            ("max_queue_size", "max_queue_size"),
            ("max_export_batch_size", "max_export_batch_size"),
            ("schedule_delay_millis", "schedule_delay"),
        )
        if get(name) is not None
    }
    for key, variable in (("max_queue_size", "OTEL_BSP_MAX_QUEUE_SIZE"),
                          ("max_export_batch_size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                          ("schedule_delay_millis", "OTEL_BSP_SCHEDULE_DELAY"),
                          ("export_timeout_millis", "OTEL_BSP_EXPORT_TIMEOUT")):
        read = numbers[variable]
        if key not in batch_args and read.explicit:
            default = next(n.default for n in SDK_NUMBERS if n.variable == variable)
            batch_args[key] = int(read.value if read.value is not None else default)
    fast_path, fast_path_source = _fast_path(get("fast_path"), environ, problems)
    return Settings(
        enabled=True,
        hmac_keys=_hmac_keys(conf),
        switched_on=switched_on,
        connection_string=str(profiler("connection_string") or ""),
        exporter=exporter,
        exporter_args=exporter_args,
        batch_args=batch_args,
        service_name=_service_name(get("service_name"), environ, problems),
        span_limits=_span_limits(get("attribute_value_length_limit"), numbers),
        max_export_batch_bytes=int(str(get("max_export_batch_bytes"))),
        max_queue_bytes=int(str(get("max_queue_bytes"))),
        problems=tuple(problems),
        fast_path=fast_path,
        fast_path_source=fast_path_source,
        redis_command_spans=bool(profiler("redis_command_spans")),
        sample_ratio=float(get("sample_ratio")),  # type: ignore[arg-type]
        honor_w3c_sampled=bool(get("honor_w3c_sampled")),
        shutdown_timeout=float(get("shutdown_timeout")),  # type: ignore[arg-type]
        **metrics,
    )


@dataclass(frozen=True)
class Endpoint:
    """The URL an OTLP exporter sends to, and the setting it comes from."""

    url: str
    source: str  # the option, the variable, or "default"


def endpoint(s: Settings, environ: Mapping[str, str] = os.environ) -> Endpoint:
    """Where ``s``'s OTLP span exporter sends, resolved as the SDK's exporters do."""
    return _resolved(s.exporter, s.exporter_args, "TRACES", TRACES_PATH, environ)


def metrics_endpoint(s: Settings,
                     environ: Mapping[str, str] = os.environ) -> Endpoint | None:
    """Where ``s``'s metric exporter sends; None when metrics are off."""
    if s.metrics is None:
        return None
    return _resolved(s.metrics.exporter, s.metrics.exporter_args, "METRICS",
                     METRICS_PATH, environ)


def _resolved(exporter: str, args: Mapping[str, object], signal: str, path: str,
              environ: Mapping[str, str]) -> Endpoint:
    if args.get("endpoint"):
        return Endpoint(str(args["endpoint"]), ENDPOINT_OPTION)
    name = f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
    if value := (environ.get(name) or "").strip():
        return Endpoint(value, name)  # used as is, as the SDK does
    name = "OTEL_EXPORTER_OTLP_ENDPOINT"
    if value := (environ.get(name) or "").strip():
        if exporter == "otlp_http":
            value = value.removesuffix("/") + path
        return Endpoint(value, name)
    if exporter == "otlp_http":
        return Endpoint(DEFAULT_HTTP_ENDPOINT.removesuffix(TRACES_PATH) + path,
                        "default")
    return Endpoint(DEFAULT_GRPC_ENDPOINT, "default")
