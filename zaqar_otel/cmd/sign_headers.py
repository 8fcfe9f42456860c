"""``zaqar-otel sign-headers``: the signed OSProfiler headers for a key.

::

    zaqar-otel sign-headers --hmac-key KEY > trace-headers.txt
    curl -H @trace-headers.txt ... http://127.0.0.1:8888/v2/...

Prints on stdout, one ``Name: value`` line each (what ``curl -H @FILE``
reads), the ``X-Trace-Info`` and ``X-Trace-HMAC`` headers that
``openstack --os-profile KEY ...`` adds to its requests, made by osprofiler's
own code (``profiler.init(KEY)``, then ``web.get_trace_id_headers()``), and on
stderr the trace id the CLI would print (``Trace ID: <uuid>``) and the one
Jaeger shows. The request that carries them starts a trace in a Zaqar whose
``[profiler] hmac_keys`` holds KEY; every request sent with the same headers
joins that trace. The key itself is printed nowhere.

The key comes from ``--hmac-key``, else the first of ``$OSPROFILER_HMAC_KEYS``
(which keeps it out of the command line and the shell's history).

Exit status: 0 printed, 2 wrong usage or no key.
"""

from __future__ import annotations

import argparse
import os
import sys

from zaqar_otel.propagation import idmap

EXIT_OK, EXIT_USAGE = 0, 2
PROG = "zaqar-otel sign-headers"
KEYS_VARIABLE = "OSPROFILER_HMAC_KEYS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hmac-key", metavar="KEY",
        help=f"one of Zaqar's [profiler] hmac_keys (default: the first of "
        f"${KEYS_VARIABLE})")


def _key(args: argparse.Namespace) -> str | None:
    if args.hmac_key:
        return str(args.hmac_key)
    keys = [k.strip() for k in os.environ.get(KEYS_VARIABLE, "").split(",")]
    return next((k for k in keys if k), None)


def main(args: argparse.Namespace) -> int:
    key = _key(args)
    if not key:
        print(f"{PROG}: error: no key: give --hmac-key KEY (one of Zaqar's "
              f"[profiler] hmac_keys) or set ${KEYS_VARIABLE}", file=sys.stderr)
        return EXIT_USAGE
    from osprofiler import profiler, web

    prof = profiler.init(key)
    try:
        headers = web.get_trace_id_headers()
        base_id = str(prof.get_base_id())
    finally:
        profiler.clean()
    for name, value in headers.items():
        print(f"{name}: {value}")
    trace_hex = f"{idmap.trace_id_from_base_id(base_id):032x}"
    print(f"Trace ID: {base_id}  (OTel / Jaeger trace id {trace_hex})",
          file=sys.stderr)
    return EXIT_OK
