"""``zaqar-otel init-db``: create the tables of Zaqar's SQL management store.

::

    zaqar-otel init-db --config-file zaqar.conf

Reads zaqar.conf as ``zaqar-server`` does and, when ``[drivers]
management_store = sqlalchemy``, creates the tables Zaqar needs (``Queues``,
``Pools``, ``Flavors``, ``Catalogue``) at ``[drivers:management_store:sqlalchemy]
uri``, from Zaqar's own table definitions: what ``zaqar-sql-db-manage upgrade
head`` makes, which fails on SQLite at migration 006 (``near "change": syntax
error``). Tables that exist are kept; running it twice changes nothing. The
demo creates its SQLite store with the same code
(:func:`zaqar_otel.demo.zaqar_server.create_tables`).

Exit status: 0 created or already there (or a management store without
tables), 1 the database refused, 2 wrong usage or no such config file.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
PROG = "zaqar-otel init-db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-file", action="append", default=[], metavar="PATH",
        help="a zaqar.conf to read; repeat for more, later files win (default: "
        "oslo.config's places, such as /etc/zaqar/zaqar.conf)")
    parser.add_argument(
        "--config-dir", action="append", default=[], metavar="DIR",
        help="a directory whose *.conf files are read after the files")


def _shown(url: str) -> str:
    """The URL without its password."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: say only its scheme
        return url.split(":", 1)[0] + "://..."


def main(args: argparse.Namespace) -> int:
    from zaqar_otel.cmd import check

    try:
        conf = check.load_conf(args.config_file, args.config_dir)
    except check.UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except check.SetupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    store = conf.drivers.management_store
    if store != "sqlalchemy":
        print(f"[drivers] management_store = {store}: it has no tables to "
              "create; nothing done")
        return EXIT_OK
    url = conf["drivers:management_store:sqlalchemy"].uri
    import sqlalchemy as sa

    from zaqar_otel.demo.zaqar_server import create_tables

    try:
        created = create_tables(url)
    except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {_shown(url)}: {reason}", file=sys.stderr)
        return EXIT_PROBLEMS
    if created:
        print(f"created {', '.join(created)} in {_shown(url)}")
    else:
        print(f"Zaqar's tables are already in {_shown(url)}; nothing done")
    return EXIT_OK
