"""Configuration options of zaqar-otel, for zaqar.conf.

``[profiler]`` keeps the meaning of Zaqar's and osprofiler's own options
(``enabled``, ``hmac_keys``, ``connection_string``, ``trace_wsgi_transport``,
``trace_message_store``, ``trace_management_store``, ``trace_sqlalchemy``,
``trace_requests``) and gains one switch per database family and one for
pooling. ``[opentelemetry]`` says where and how spans are exported, and
whether and how metrics are.

Options left unset fall back to the standard ``OTEL_*`` variable named in
their help, then to the default given there. ``list_opts()`` feeds
``oslo-config-generator --namespace zaqar_otel``.
"""

from __future__ import annotations

import copy

from oslo_config import cfg

from zaqar_otel import switches

PROFILER_GROUP = "profiler"
OTEL_GROUP = "opentelemetry"

EXPORTER_CHOICES = [
    ("otlp_http", "OTLP/HTTP protobuf, port 4318"),
    ("otlp_grpc", "OTLP/gRPC, port 4317"),
    ("console", "spans printed on stdout, for debugging"),
    ("none", "spans created, nothing exported"),
]
EXPORTERS = tuple(name for name, _ in EXPORTER_CHOICES)
#: ``[opentelemetry] fast_path``'s variable, read when the option is unset.
FAST_PATH_VARIABLE = "OTEL_ZAQAR_FAST_PATH"
FAST_PATH_CHOICES = ("auto", "off")

#: zaqar-otel's own trace switches; the help text is in the one table.
profiler_opts = [
    cfg.BoolOpt(switch.option, default=False, help=switch.help)
    for switch in switches.SWITCHES if switch.owner == switches.OURS
] + [
    cfg.BoolOpt(
        "redis_command_spans",
        default=False,
        help="With trace_redis = True: each Redis command (and each pipeline) "
        "as a client span of its own (the redis-py instrumentation's). False: "
        "as an event on the span that sent it, the storage controller call, "
        "with the same statement ('COMMAND ? ?'), argument count, server and "
        "database attributes, its duration (db.client.operation.duration) and "
        "error.type; no bar, span id or service-map edge of its own. An event "
        "costs a fraction of a span: on a saturated Zaqar, command spans take "
        "about a tenth of its throughput.",
    ),
]

otel_opts = [
    cfg.StrOpt(
        "exporter",
        choices=EXPORTER_CHOICES,
        help="Where spans go. Unset: OTEL_TRACES_EXPORTER and "
        "OTEL_EXPORTER_OTLP_PROTOCOL, else otlp_http.",
    ),
    cfg.URIOpt(
        "endpoint",
        schemes=["http", "https"],
        # It may carry user:password; zaqar-otel's own lines mask them.
        secret=True,
        help="Collector URL, e.g. http://collector:4318 for otlp_http (the "
        "path /v1/traces is added unless the URL has a path) or "
        "http://collector:4317 for otlp_grpc. Unset: "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, else "
        "http://localhost:4318 or :4317.",
    ),
    cfg.StrOpt(
        "headers",
        secret=True,
        help="Headers sent with every export, as key1=value1,key2=value2 (for "
        "instance an API key of a hosted collector). Unset: "
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS.",
    ),
    cfg.StrOpt(
        "certificate",
        help="CA bundle (PEM file) that verifies the collector's TLS "
        "certificate. Unset: OTEL_EXPORTER_OTLP_CERTIFICATE, else the system's.",
    ),
    cfg.BoolOpt(
        "insecure",
        help="otlp_grpc only: plain-text gRPC without TLS. Unset: "
        "OTEL_EXPORTER_OTLP_INSECURE, else true for an http:// endpoint.",
    ),
    cfg.FloatOpt(
        "timeout",
        min=0.1,
        help="Seconds one export may take before it is abandoned. Unset: "
        "OTEL_EXPORTER_OTLP_TIMEOUT, else 10.",
    ),
    cfg.StrOpt(
        "compression",
        choices=[("none", "no compression"), ("gzip", "gzip"),
                 ("deflate", "deflate, otlp_http only")],
        help="Compression of exported batches (deflate: otlp_http only). "
        "Unset: OTEL_EXPORTER_OTLP_COMPRESSION, else none.",
    ),
    cfg.StrOpt(
        "service_name",
        help="service.name of every span. Unset: OTEL_SERVICE_NAME, else "
        "'zaqar'. OTEL_RESOURCE_ATTRIBUTES adds resource attributes.",
    ),
    cfg.FloatOpt(
        "sample_ratio",
        default=0.0,
        min=0.0,
        max=1.0,
        help="Fraction of requests traced when they carry no trusted trace "
        "context (no valid OSProfiler signature), by a random draw per request "
        "(never from the caller's trace id, which the caller chooses). 0.0, the "
        "default, traces only what a caller asks for with a signed header, as "
        "OSProfiler does.",
    ),
    cfg.BoolOpt(
        "honor_w3c_sampled",
        default=False,
        help="False: an inbound traceparent becomes the parent of a trace "
        "started for another reason (signature, sample_ratio), but its sampled "
        "flag alone starts none, so unauthenticated clients cannot force "
        "tracing. True: a sampled traceparent starts a trace.",
    ),
    cfg.IntOpt(
        "max_queue_size",
        min=1,
        help="Spans held for export at most; more are dropped (and counted). "
        "Unset: OTEL_BSP_MAX_QUEUE_SIZE, else 2048.",
    ),
    cfg.IntOpt(
        "max_export_batch_size",
        min=1,
        help="Spans per export request at most. Unset: "
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE, else 512.",
    ),
    cfg.IntOpt(
        "schedule_delay",
        min=1,
        help="Milliseconds between two exports. Unset: "
        "OTEL_BSP_SCHEDULE_DELAY, else 5000.",
    ),
    cfg.IntOpt(
        "attribute_value_length_limit",
        min=1,
        help="Characters kept of a string attribute value (of a span, event "
        "or link, ours and the instrumentors'); longer values are truncated "
        "to it, as the SDK's SpanLimits do. Bounds what one client's request "
        "(a User-Agent or Host header up to the WSGI server's 64 KiB line) "
        "adds to a span, and keeps whole every value Zaqar's own spans carry "
        "(SQL statements, routes, stack traces of exception events). Unset: "
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT (span attributes), "
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, else 8192.",
    ),
    cfg.IntOpt(
        "max_export_batch_bytes",
        default=1048576,
        min=4096,
        help="Bytes of encoded spans per export request at most (besides "
        "max_export_batch_size spans): a batch beyond it is sent as several "
        "requests, so that no request reaches a collector's limit (4 MiB for "
        "OTLP/gRPC by default). A request the collector still refuses as too "
        "large (HTTP 413, gRPC RESOURCE_EXHAUSTED) is split in two and sent "
        "again; a single span it refuses is dropped and counted.",
    ),
    cfg.IntOpt(
        "max_queue_bytes",
        default=8388608,
        min=65536,
        help="Bytes of encoded spans held for export at most (besides "
        "max_queue_size spans); more are dropped and counted, so that memory "
        "stays bounded when the collector does not answer.",
    ),
    cfg.FloatOpt(
        "shutdown_timeout",
        default=5.0,
        min=0.0,
        help="Seconds the server waits at exit (or SIGTERM) to flush spans; "
        "spans not exported by then are dropped and counted in the log.",
    ),
    cfg.BoolOpt(
        "metrics",
        help="Export Zaqar's metrics (request durations by route, messages "
        "sent, consumed and settled per queue, operation durations, the wait "
        "of a message before it is claimed) for every request, traced or not, "
        "to the same collector as spans (OTLP/HTTP: the path /v1/metrics). "
        "Independent of tracing: with [profiler] trace_wsgi_transport = false "
        "requests are measured but none is traced. Unset: on when "
        "OTEL_METRICS_EXPORTER is otlp or console, else off (an endpoint that "
        "takes only traces, such as Jaeger's, would refuse them).",
    ),
    cfg.IntOpt(
        "metrics_export_interval",
        min=100,
        help="Milliseconds between two metric exports. Unset: "
        "OTEL_METRIC_EXPORT_INTERVAL, else 60000.",
    ),
    cfg.BoolOpt(
        "metrics_per_queue",
        default=True,
        help="Messaging metrics carry messaging.destination.name (the queue "
        "or topic). Queue names are chosen by tenants: at most "
        "metrics_max_queues of them get their own series; false: no queue "
        "attribute at all, one series per operation.",
    ),
    cfg.IntOpt(
        "metrics_max_queues",
        default=100,
        min=0,
        help="Distinct queues (or project and queue pairs) with series of "
        "their own, per process, first come first served; the messages of "
        "every later queue are counted under the queue name '_other' (one "
        "warning when that starts). Bounds the series a tenant can create.",
    ),
    cfg.BoolOpt(
        "metrics_per_project",
        default=False,
        help="Messaging metrics also carry zaqar.project.id (the "
        "X-Project-ID). Counted against metrics_max_queues together with the "
        "queue name.",
    ),
    cfg.StrOpt(
        "fast_path",
        choices=[
            ("auto", "zaqar-otel's leaner spans and OTLP encoder, on the "
             "OpenTelemetry SDK releases they were tested with"),
            ("off", "the SDK's own TracerProvider, BatchSpanProcessor and "
             "OTLP exporters"),
        ],
        help="How spans are recorded and exported. auto: zaqar-otel's fast "
        "path (a leaner span, spans encoded to OTLP as they end, about a "
        "fifth of tracing's cost less), taken only on the OpenTelemetry SDK "
        "releases it was tested with (opentelemetry-sdk 1.45.x) and when a "
        "span made through it at start-up matches the SDK's own, field by "
        "field and byte by byte; otherwise the SDK's own path, said in one "
        "log line. off: the SDK's own path (its TracerProvider, "
        "BatchSpanProcessor and OTLP exporters, with zaqar-otel's redaction "
        "and drop counts around the exporter). The same spans either way; "
        "zaqar-otel check says which path is used and why. Unset: "
        "OTEL_ZAQAR_FAST_PATH, else auto.",
    ),
    cfg.BoolOpt(
        "allow_stock_hmac_key",
        default=False,
        help="Allow tracing with [profiler] hmac_keys = SECRET_KEY, the stock "
        "key everyone knows. Without this, tracing stays off with that key.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register zaqar-otel's options (Zaqar and osprofiler register theirs)."""
    conf.register_opts(profiler_opts, group=PROFILER_GROUP)
    conf.register_opts(otel_opts, group=OTEL_GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator (namespace ``zaqar_otel``).

    ``[profiler]`` also lists osprofiler's and Zaqar's own options, which
    zaqar-otel reads with their meaning unchanged, so the sample shows every
    option that decides what is traced.
    """
    return [(PROFILER_GROUP, _owned_elsewhere() + profiler_opts),
            (OTEL_GROUP, otel_opts)]


#: Help of osprofiler's and Zaqar's options whose meaning zaqar-otel changes;
#: their upstream help would be wrong under it (shown in the sample only).
HELP_UNDER_ZAQAR_OTEL = {
    "trace_wsgi_transport":
        "Trace requests to the WSGI API (zaqar-server's wsgi transport, "
        "zaqar-otel-server, zaqar_otel.wsgi:application): a server span per "
        "traced request, with everything below it. False: no WSGI request is "
        "traced (requests are still measured with [opentelemetry] metrics). "
        "The websocket API has its own switch, trace_websocket_transport.",
    "trace_requests":
        "Trace outgoing HTTP calls Zaqar makes with python-requests (webhook "
        "deliveries, keystonemiddleware's token checks) as client spans under "
        "the request that made them, exported with the rest, whatever the "
        "exporter. They carry traceparent; OpenStack services also get the "
        "signed OSProfiler headers, webhook subscribers never. URLs are "
        "exported without their query string or credentials.",
}


def _owned_elsewhere() -> list[cfg.Opt]:
    from osprofiler import opts as osprofiler_opts

    found = [opt for group, group_opts in osprofiler_opts.list_opts()
             if group == PROFILER_GROUP for opt in group_opts]
    try:
        from zaqar.conf import profiler
    except ImportError:  # the propagator alone runs without Zaqar
        return [_with_our_help(opt) for opt in found]
    return [_with_our_help(opt) for opt in found + list(profiler.ALL_OPTS)]


def _with_our_help(opt: cfg.Opt) -> cfg.Opt:
    """A copy of ``opt`` with zaqar-otel's help, if it has one (for the sample)."""
    help_text = HELP_UNDER_ZAQAR_OTEL.get(opt.dest)
    if help_text is None:
        return opt
    ours = copy.copy(opt)
    ours.help = help_text
    return ours
