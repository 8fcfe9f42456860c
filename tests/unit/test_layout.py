"""The package's layering, as docs/design.md states it: which part may
import which. A new import across the rules fails here, with the rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "zaqar_otel"

# part -> the parts it may import (besides itself). A part is a folder or a
# top-level module of zaqar_otel; "zaqar_otel" is the package's __init__.
ALLOWED: dict[str, set[str]] = {
    "propagation": set(),
    "switches": set(),
    "patching": set(),
    "redact": set(),
    "opts": {"switches"},
    "settings": {"opts", "propagation", "switches"},
    # What every exported span goes through, whichever path made it: the SDK's
    # public interfaces only.
    "export": {"redact"},
    # The seam: the SDK's objects (the stock path and the fast one), and
    # every read of a private of the SDK, the API or the instrumentations.
    "_sdk": {"export", "settings", "patching", "redact", "zaqar_otel"},
    "sampling": {"_sdk", "propagation"},
    "tracepoints": {"_sdk", "propagation", "patching", "redact"},
    "messaging": {"propagation", "sampling", "patching", "redact"},
    "entry": {"_sdk", "messaging", "propagation", "sampling", "tracepoints",
              "patching", "redact"},
    "backends": {"_sdk", "entry", "messaging", "switches", "patching", "redact"},
    "metrics": {"_sdk", "settings", "opts", "switches", "export", "sampling",
                "patching", "redact", "zaqar_otel"},
    "logs": {"settings", "opts", "patching", "redact", "zaqar_otel"},
    # The start-up hook's internals: set-up, in its small modules.
    "hook": {"_sdk", "backends", "entry", "export", "messaging", "metrics",
             "logs", "switches",
             "propagation", "sampling", "settings", "tracepoints", "patching",
             "redact", "zaqar_otel"},
    # The faces: what users and entry points name.
    "zaqar_otel": {"propagation", "instrument"},
    "instrument": {"hook"},
    "bridge": {"propagation"},
    "wsgi": {"instrument"},
    "distro": {"instrument", "settings", "switches", "propagation"},
    "demo": {"propagation"},
    "cmd": {"_sdk", "instrument", "demo", "settings", "opts", "switches", "redact",
            "propagation", "export", "metrics", "zaqar_otel"},
}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return "zaqar_otel" if relative.stem == "__init__" else relative.stem


def _imported_parts(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.module != "zaqar_otel" else [
                f"zaqar_otel.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "zaqar_otel":
                found.add("zaqar_otel")
            elif name.startswith("zaqar_otel."):
                top = name.split(".")[1]
                found.add("zaqar_otel" if top == "__version__" else top)
    return found


def _imports_of(module_name_prefix: str, tree: ast.AST) -> list[str]:
    return [a.name if isinstance(node, ast.Import) else node.module or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for a in (node.names if isinstance(node, ast.Import) else [node])
            if (a.name if isinstance(node, ast.Import) else node.module or ""
                ).startswith(module_name_prefix)]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_parts_its_layer_may(path: Path) -> None:
    part = _part(path)
    assert part in ALLOWED, (
        f"{part} is a new part: state what it may import in docs/design.md "
        "and in ALLOWED here")
    tree = ast.parse(path.read_text(), str(path))
    wrong = _imported_parts(tree) - ALLOWED[part] - {part}
    if part == "zaqar_otel":
        wrong.discard("zaqar_otel")
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(wrong)}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "propagation").glob("*.py")),
                         ids=lambda p: p.name)
def test_propagation_is_pure(path: Path) -> None:
    """Only the OTel API and the standard library: the propagator loads in
    any OTel Python process, without Zaqar, osprofiler or the SDK."""
    tree = ast.parse(path.read_text(), str(path))
    for prefix in ("opentelemetry.sdk", "osprofiler", "zaqar.", "oslo"):
        assert not _imports_of(prefix, tree), (path.name, prefix)


def test_no_part_imports_the_tests_or_pytest() -> None:
    for path in MODULES:
        tree = ast.parse(path.read_text(), str(path))
        assert not _imports_of("tests", tree), path
        assert not _imports_of("pytest", tree), path


def _private_otel_imports(tree: ast.AST) -> list[str]:
    """``opentelemetry`` modules or names imported whose path has a part
    starting with an underscore (the SDK's, the API's or an
    instrumentation's privates)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "opentelemetry"):
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("opentelemetry")]
        else:
            continue
        found += [n for n in names if any(part.startswith("_") and part != "__version__"
                                          for part in n.split("."))]
    return found


@pytest.mark.parametrize("path", [p for p in MODULES if _part(p) != "_sdk"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_seam_imports_an_opentelemetry_private(path: Path) -> None:
    """Every private of the SDK, the API or the instrumentations zaqar-otel
    reads lives in zaqar_otel/_sdk/ (docs/design.md lists them)."""
    tree = ast.parse(path.read_text(), str(path))
    assert not _private_otel_imports(tree), path.relative_to(PACKAGE)


def _private_otel_reads(tree: ast.AST) -> list[str]:
    """Private names (one leading underscore) read of what a module imported
    from ``opentelemetry``: ``engine._get_x``, ``engine.EngineTracer._y``,
    ``getattr(engine, "_z")`` (an object those handed back, as
    ``context._otel_span``, is not seen)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "opentelemetry"):
            bound |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            bound |= {a.asname or a.name.split(".")[0] for a in node.names
                      if a.name.startswith("opentelemetry")}

    def root(node: ast.AST) -> str | None:
        while isinstance(node, ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and private(node.attr)
                and root(node) in bound):
            found.append(f"{root(node)}...{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr")
              and len(node.args) >= 2 and root(node.args[0]) in bound
              and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and private(node.args[1].value)):
            found.append(f"{root(node.args[0])}...{node.args[1].value}")
    return found


@pytest.mark.parametrize("path", [p for p in MODULES if _part(p) != "_sdk"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_seam_reads_an_opentelemetry_private(path: Path) -> None:
    """Nor does a module outside zaqar_otel/_sdk/ read a private name of an
    OpenTelemetry module or class it imported."""
    tree = ast.parse(path.read_text(), str(path))
    assert not _private_otel_reads(tree), path.relative_to(PACKAGE)


def test_the_seam_check_finds_a_private_read() -> None:
    tree = ast.parse(
        "from opentelemetry.instrumentation.sqlalchemy import engine\n"
        "import opentelemetry.sdk.trace as sdk_trace\n"
        "from zaqar import storage\n"
        "engine._get_attributes_from_url(url)\n"
        "engine.EngineTracer._before_cur_exec\n"
        "getattr(sdk_trace, '_x', None)\n"
        "engine.EngineTracer.__init__, storage._private, engine.EngineTracer\n")
    assert sorted(_private_otel_reads(tree)) == [
        "engine..._before_cur_exec", "engine..._get_attributes_from_url",
        "sdk_trace..._x"]


def test_the_seam_check_finds_a_private_import() -> None:
    tree = ast.parse("from opentelemetry.sdk._configuration import _BaseConfigurator\n"
                     "from opentelemetry.trace import SpanKind\n"
                     "import opentelemetry.context._x\n")
    assert _private_otel_imports(tree) == [
        "opentelemetry.sdk._configuration._BaseConfigurator",
        "opentelemetry.context._x"]


# The checkout's other trees: the harness (servers, receivers, signed
# clients) that the tests, the peers and the benchmarks share, and those
# three, which import the harness and the product but never one another.
REPO = PACKAGE.parent
NEVER: dict[str, set[str]] = {
    "zaqar_otel": {"harness", "tests", "peers", "bench"},
    "harness": {"tests", "peers", "bench"},
    "tests": {"peers", "bench"},
    "peers": {"tests", "bench"},
    "bench": {"tests", "peers"},
}


def _top_levels(tree: ast.AST) -> set[str]:
    """The top-level packages a module imports (absolute imports)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("tree_name", sorted(NEVER))
def test_the_product_harness_tests_peers_and_bench_keep_to_their_own(
        tree_name: str) -> None:
    """The product never imports the harness; the harness never imports
    the tests, the peers or the benchmarks; those three share only the
    harness and the product. (tests/breadth, which is kept as it is, reads
    ``tests.tracing_support``: the harness's old name, in tests.)"""
    wrong = []
    for path in sorted((REPO / tree_name).rglob("*.py")):
        if ".venv" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for top in sorted(_top_levels(tree) & NEVER[tree_name]):
            wrong.append(f"{path.relative_to(REPO)} imports {top}")
    assert not wrong, "\n".join(wrong)


_IMPORT_EVERYTHING = r"""
import importlib, json, logging, pkgutil, sys
from zaqar_otel._sdk import layout

probes = ("current_context_slot", "local_span_context_maker", "span_layout_known",
          "suppression_slot", "quiet_processor", "follows_parent", "conventions",
          "stable_conventions", "global_meter_provider_set")
called = []
for name in probes:
    real = getattr(layout, name)
    def counted(*a, _n=name, _r=real, **k):
        called.append(_n)
        return _r(*a, **k)
    setattr(layout, name, counted)
records = []
handler = logging.Handler(logging.DEBUG)
handler.emit = lambda record: records.append(f"{record.name}: {record.getMessage()}")
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.DEBUG)
factory = logging.getLogRecordFactory()
from opentelemetry import propagate, trace
textmap = propagate.get_global_textmap()
import zaqar_otel
imported, skipped = [], []
for info in pkgutil.walk_packages(zaqar_otel.__path__, "zaqar_otel."):
    if info.name == "zaqar_otel.wsgi":  # the WSGI entry point: import is its job
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ImportError as exc:  # an optional extra (demo) not installed
        skipped.append(f"{info.name}: {exc}")
print(json.dumps({
    "imported": imported, "skipped": skipped, "probes": called,
    "logged": [r for r in records if not r.startswith("asyncio")],
    "factory_changed": logging.getLogRecordFactory() is not factory,
    "textmap_changed": propagate.get_global_textmap() is not textmap,
    "provider": type(trace.get_tracer_provider()).__name__}))
"""


def test_importing_every_module_changes_nothing() -> None:
    """Import has no side effects: importing every module of the package
    (but ``zaqar_otel.wsgi``, the WSGI servers' entry point) runs no probe
    of the SDK's layout (set-up runs them), logs nothing, and changes no
    global of logging or OpenTelemetry."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING],
                          capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(found["imported"]) > 60, found
    assert found["probes"] == [], found["probes"]
    assert found["logged"] == [], found["logged"]
    assert not found["factory_changed"] and not found["textmap_changed"]
    assert found["provider"] == "ProxyTracerProvider"
