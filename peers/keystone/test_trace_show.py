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
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends import Jaeger
from harness.browser import open_page
from harness.receivers import BackendReceiver
from peers.keystone import stack as stack_module
from peers.keystone.stack import (
    COMMANDS,
    KEYSTONE_SERVICE,
    Stack,
    require_stack,
    whole_in_jaeger,
)
from zaqar_otel.cmd import cli, trace


@pytest.fixture(scope="module")
def jaeger_stack() -> Iterator[tuple[Jaeger, Stack]]:
    require_stack()
    keystone_profiler = stack_module.keystone_profiler
    with Jaeger() as jaeger, pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_module, "OTLPReceiver", lambda: BackendReceiver(jaeger))
        # Keystone's SQL too, as an operator's osprofiler set-up has it.
        patch.setattr(stack_module, "keystone_profiler", lambda receiver: {
            **keystone_profiler(receiver), "trace_sqlalchemy": "true"})
        with Stack() as running:
            yield jaeger, running


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
    spans = whole_in_jaeger(jaeger, f"{trace_id:032x}", route, timeout=60.0,
                            quiet=2.0)["spans"]
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
