"""``zaqar-otel trace show`` of what ``openstack --os-profile KEY messaging ...``
printed, read back from a real Jaeger (issue 26): the CLI's Keystone calls,
Zaqar's request and Keystone's spans under keystonemiddleware's calls (its
SQL included, osprofiler's own OTLP driver), one report as osprofiler gave it.

Every view is checked: ``--json`` (read back by osprofiler's own CLI,
``osprofiler trace show FILE --json`` and ``--html``, from Keystone's venv:
what reads osprofiler's JSON reads ours), ``--html`` in headless chromium
(every span name in its DOM, its screenshot drawn; osprofiler's own page of
the same report, offline, shows an empty table), ``--dot`` (osprofiler's own
graph code run on the report gives the same nodes and edges) and the tree.

The stack of test_openstack_cli.py (:class:`harness.keystone_stack.Stack`),
exporting to Jaeger's OTLP/HTTP receiver instead of the test receiver. Needs
Keystone's venv and the CLI (``make peer-keystone``) and Jaeger (``make
jaeger``); skips without them, fails when ``CI`` is set.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.backends import Jaeger
from harness.browser import assert_drawn, open_page
from harness.keystone import keystone_venv
from harness.keystone_stack import (
    COMMANDS,
    KEYSTONE_SERVICE,
    Stack,
    require_stack,
    whole_in_jaeger,
)
from harness.receivers import BackendReceiver
from zaqar_otel.cmd import cli, trace


@pytest.fixture(scope="module")
def jaeger_stack() -> Iterator[tuple[Jaeger, Stack]]:
    require_stack()
    # Keystone's SQL too, as an operator's osprofiler set-up has it.
    with Jaeger() as jaeger, Stack(receiver=BackendReceiver(jaeger),
                                   profiler={"trace_sqlalchemy": "true"}) as running:
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
    _keep(shown.screenshot)
    assert_drawn(shown.screenshot)
    cells = {html.unescape(c) for c in re.findall(
        r'<td class="name[^"]*" title="[^"]*">(.*?)</td>', shown.dom)}
    assert cells == names | {"total"}

    assert cli.main(["trace", "show", base_id, "--jaeger", jaeger.url,
                     "--dot"]) == trace.EXIT_OK
    dot = capsys.readouterr().out
    # The same nodes, numbered alike, and edges (osprofiler adds an edge
    # once the child's subtree is drawn: another order of the same graph).
    ours, theirs_graph = _dot_graph(dot), _osprofiler_graph(report)
    assert ours[0] == theirs_graph[0]
    assert sorted(ours[1]) == sorted(theirs_graph[1])
    labels = re.findall(r'\[label="(.*)"\]', dot)
    assert len(labels) == len(spans) + 1 and dot.count(" -> ") == len(spans)
    assert {label.split(":", 1)[0] for label in labels[1:]} == {
        "zaqar", KEYSTONE_SERVICE}

    assert cli.main(["trace", "show", base_id, "--jaeger", jaeger.url]) == 0
    tree = capsys.readouterr().out
    assert f"{len(spans)} spans from {KEYSTONE_SERVICE}, zaqar" in tree

    # osprofiler's own CLI reads our --json: the same report back, and its
    # page of it (which, offline, draws no span: its AngularJS is on CDNs).
    saved = tmp_path / "report.json"
    saved.write_text(out)
    theirs = _osprofiler("trace", "show", str(saved), "--json")
    assert json.loads(theirs) == report
    their_page = tmp_path / f"osprofiler-{args[2]}.html"
    _osprofiler("trace", "show", str(saved), "--html", "--out", str(their_page))
    text = their_page.read_text()
    data = text[text.index("var OSProfilerData = ") + len("var OSProfilerData = "):]
    assert json.JSONDecoder().raw_decode(data)[0] == report
    assert text.count("src=\"https://") == 6, "its scripts come from CDNs"
    offline = open_page(their_page, tmp_path)
    _keep(offline.screenshot)
    drawn = re.sub(r"<script.*?</script>", "", offline.dom, flags=re.S)
    assert not any(name in drawn for name in names), "no span drawn offline"
    with pytest.raises(AssertionError, match="looks blank"):
        assert_drawn(offline.screenshot)
    with capsys.disabled():
        print(f"\n{' '.join(args[:3])}: {len(spans)} spans")


def _keep(screenshot: Path) -> None:
    shots = os.environ.get("ZAQAR_OTEL_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(shots) / screenshot.name)


def _osprofiler(*argv: str) -> str:
    """osprofiler's own CLI, from Keystone's venv (the one an operator has
    beside a service); it asks for a connection string even to read a file
    (and does not use it)."""
    program = keystone_venv() / "bin" / "osprofiler"
    done = subprocess.run(  # noqa: S603 - our own argv
        [str(program), *argv, "--connection-string", "unused://"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _dot_graph(dot: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(nodes as (id, label), edges) of ``trace show --dot``'s text."""
    nodes = [(n, json.loads(label)) for n, label in
             re.findall(r'^\t(\d+) \[label=(".*")\]$', dot, re.M)]
    edges = re.findall(r"^\t(\d+) -> (\d+)$", dot, re.M)
    return nodes, edges


def _osprofiler_graph(report: dict[str, Any]) -> tuple[
        list[tuple[str, str]], list[tuple[str, str]]]:
    """osprofiler's own ``--dot`` code (``TraceCommands._create_dot_graph``)
    run on the report. It draws with the ``graphviz`` package, which neither
    osprofiler nor zaqar-otel depends on (osprofiler's CLI says "graphviz
    library is required" without it); its two calls are recorded here."""
    from osprofiler.cmd import commands

    nodes: list[tuple[str, str]] = []
    edges: list[tuple[str, str]] = []
    graph = types.SimpleNamespace(node=lambda n, label: nodes.append((n, label)),
                                  edge=lambda a, b: edges.append((a, b)))
    recorder = types.ModuleType("graphviz")
    recorder.Digraph = lambda **kwargs: graph  # type: ignore[attr-defined]
    saved = sys.modules.get("graphviz")
    sys.modules["graphviz"] = recorder
    try:
        commands.TraceCommands()._create_dot_graph(report)
    finally:
        if saved is None:
            del sys.modules["graphviz"]
        else:
            sys.modules["graphviz"] = saved
    return nodes, edges
