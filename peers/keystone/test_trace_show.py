"""``zaqar-otel trace show`` of what ``openstack --os-profile KEY messaging ...``
printed, read back from a real Jaeger (issue 26): the CLI's Keystone calls,
Zaqar's request and Keystone's spans under keystonemiddleware's calls (its
SQL included, osprofiler's own OTLP driver), one report as osprofiler gave it.

The stack of test_openstack_cli.py (:class:`peers.keystone.stack.Stack`),
exporting to Jaeger's OTLP/HTTP receiver instead of the test receiver. Needs
Keystone's venv and the CLI (``make peer-keystone``) and Jaeger (``make
jaeger``); skips without them, fails when ``CI`` is set.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peers.keystone import stack as stack_module
from peers.keystone.keystone_process import (
    KEYSTONE_VERSION,
    keystone_venv,
    keystone_venv_ready,
)
from peers.keystone.stack import COMMANDS, KEYSTONE_SERVICE, REQUESTS_SCOPE, Stack
from tests.backends_support import Jaeger
from tests.browser import open_page
from zaqar_otel.cmd import cli, trace


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class _JaegerReceiver:
    """Where the stack sends spans: Jaeger's OTLP/HTTP receiver (what the
    stack reads of its receiver: ``port`` and ``endpoint``)."""

    def __init__(self, jaeger: Jaeger) -> None:
        self.port = jaeger.http_port
        self.endpoint = jaeger.otlp_http

    def __enter__(self) -> _JaegerReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture(scope="module")
def jaeger_stack() -> Iterator[tuple[Jaeger, Stack]]:
    if not keystone_venv_ready():
        _unavailable(
            f"Keystone {KEYSTONE_VERSION}'s venv (.cache/{keystone_venv().name}) "
            "is not installed: run `make peer-keystone` or `tox -e peer-keystone`")
    if not stack_module.openstack_bin().exists():
        _unavailable("the openstack CLI is not installed in this venv: "
                     "pip install python-openstackclient (or make peer-keystone)")
    keystone_profiler = stack_module.keystone_profiler
    with Jaeger() as jaeger, pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module, "OTLPReceiver", lambda: _JaegerReceiver(jaeger))
        # Keystone's SQL too, as an operator's osprofiler set-up has it.
        patch.setattr(stack_module, "keystone_profiler", lambda receiver: {
            **keystone_profiler(receiver), "trace_sqlalchemy": "true"})
        with Stack() as running:
            yield jaeger, running


def _complete(jaeger: Jaeger, trace_id: int, route: str,
              timeout: float = 60.0) -> list[dict[str, Any]]:
    """The trace's spans in Jaeger once Zaqar's server span is in, every
    keystonemiddleware call has Keystone's span under it (Keystone exports
    every 5 s, osprofiler's driver's default) and 2 s passed without news."""
    deadline = time.monotonic() + timeout
    count, spans = -1, []
    while time.monotonic() < deadline:
        found = jaeger.trace(f"{trace_id:032x}")
        spans = found["spans"] if found else []
        parents = {r["spanID"] for s in spans for r in s["references"]}
        tags = [{t["key"]: t["value"] for t in s["tags"]} for s in spans]
        calls = [s["spanID"] for s, t in zip(spans, tags, strict=True)
                 if t.get("otel.scope.name") == REQUESTS_SCOPE]
        if (any(s["operationName"] == route for s in spans) and calls
                and all(c in parents for c in calls) and len(spans) == count):
            return spans
        count = len(spans)
        time.sleep(2.0)
    raise AssertionError(f"trace {trace_id:032x} incomplete in Jaeger after "
                         f"{timeout:.0f}s: {count} spans")


@pytest.mark.parametrize(("args", "route"), [COMMANDS[0], COMMANDS[2]],
                         ids=["queue create", "message post"])
def test_the_cli_trace_shown_from_jaeger(
        jaeger_stack: tuple[Jaeger, Stack], args: list[str], route: str,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jaeger, stack = jaeger_stack
    result = stack.cli(args)
    assert result.returncode == 0, result.stderr
    base_id = result.trace_id
    assert base_id, result.stderr
    trace_id = uuid.UUID(base_id).int
    spans = _complete(jaeger, trace_id, route)
    names = {s["operationName"] for s in spans}

    assert cli.main(["trace", "show", base_id, "--jaeger", jaeger.url,
                     "--json"]) == trace.EXIT_OK
    out, err = capsys.readouterr()
    report = json.loads(out)
    nodes, todo = [], list(report["children"])
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node["children"])
    assert len(nodes) == len(spans) >= 200, err
    assert {n["info"]["service"] for n in nodes} == {"zaqar", KEYSTONE_SERVICE}
    # The roots are the CLI's requests: its Keystone calls and Zaqar's.
    assert all(n["parent_id"] == base_id for n in report["children"])
    assert route in {n["info"]["name"] for n in report["children"]}

    page = tmp_path / f"keystone-{args[2]}.html"
    assert cli.main(["trace", "show", base_id, "--jaeger", jaeger.url, "--html",
                     "--out", str(page)]) == trace.EXIT_OK
    shown = open_page(page, tmp_path)
    cells = {html.unescape(c) for c in re.findall(
        r'<td class="name[^"]*" title="[^"]*">(.*?)</td>', shown.dom)}
    assert cells == names | {"total"}
    assert cli.main(["trace", "show", base_id, "--jaeger", jaeger.url]) == 0
    tree = capsys.readouterr().out
    assert f"{len(spans)} spans from {KEYSTONE_SERVICE}, zaqar" in tree
    if os.environ.get("ZAQAR_OTEL_SCREENSHOTS"):
        Path(os.environ["ZAQAR_OTEL_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shown.screenshot.replace(
            Path(os.environ["ZAQAR_OTEL_SCREENSHOTS"]) / shown.screenshot.name)
    with capsys.disabled():
        print(f"\n{' '.join(args[:3])}: {len(spans)} spans")
