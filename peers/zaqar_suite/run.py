"""Zaqar's own API tests as the oracle: tracing must be transparent.

``python -m peers.zaqar_suite`` (``make peer-zaqar``, ``tox -e peer-zaqar``):

1. fetches the sdist of the installed Zaqar release from PyPI (cached in
   ``.cache/zaqar-suite/``), unpacks its ``zaqar`` tree into a temp dir,
   checks that it is byte for byte the installed package, and installs the
   few test requirements the API tests import (from the sdist's
   ``test-requirements.txt``);
2. runs ``zaqar/tests/unit/transport/wsgi/v2_0``,
   ``zaqar/tests/unit/transport/websocket`` and ``zaqar/tests/functional``
   once per mode, each in its own pytest process (junit XML), on a
   SecantusDB (MongoDB wire) and a Redis of its own:

   (a) plain Zaqar; (b) the zaqar-otel hook, tracing fully on, exporting to
   an OTLP receiver, a signed OSProfiler header on every request; (c) the
   hook with ``[profiler] enabled = false``, headers still signed; (d) no
   hook, Zaqar's own OSProfiler support on (osprofiler's Redis driver),
   headers signed; (e) no hook, no profiling, headers signed;
3. compares test by test with (a) against ``known_differences.txt``
   (exact: a new difference in (b) or (c), or a listed one that is gone,
   fails the run); a new difference in (b) or (c) is first run again,
   alone, ``RERUNS`` times in its mode: one that passes every time is
   reported as flaky, not failed (Zaqar's suite has timing races, e.g. a
   claim's age in whole seconds against a sub-second window);
4. checks the spans of (b) (``peers.zaqar_suite.spans``) and that (c)
   exported nothing.

Exit status 0 when all holds, 1 otherwise, 2 when the harness itself could
not run. Results (junit XML, logs, what the plugin recorded) are kept in
``.cache/zaqar-suite/last-run/`` unless ``--results`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from peers.zaqar_suite import compare, spans

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".cache" / "zaqar-suite"
KNOWN = HERE / "known_differences.txt"
SUITE = ("zaqar/tests/unit/transport/wsgi/v2_0",
         "zaqar/tests/unit/transport/websocket",
         "zaqar/tests/functional")
MODES = {
    "a": ("plain", "plain Zaqar"),
    "b": ("hook_on", "hook, tracing on, signed headers"),
    "c": ("hook_off", "hook, [profiler] enabled = false, signed headers"),
    "d": ("osprofiler", "no hook, Zaqar's own OSProfiler on, signed headers"),
    "e": ("headers", "no hook, no profiling, signed headers (unit tests)"),
}
STRICT = {"b", "c"}  # the modes with zaqar-otel installed
# (e) only proves what the signed headers alone do; the functional tests
# (most of a mode's time, waiting for message TTLs) have none of that.
SCOPE = {"e": SUITE[:2]}
# What Zaqar's API tests import from test-requirements.txt (the rest is for
# linting, coverage, stestr and other backends' tests).
NEEDED = ("ddt", "fixtures", "testtools", "oslotest", "testscenarios",
          "websocket-client")
HMAC_KEY = "zaqar-suite-" + uuid.uuid4().hex[:8]
# How often a new difference in (b) or (c) is run again before it counts:
# a test that fails once and then passes twice in a fresh process is a race
# of its own, printed as flaky; one that fails again is a failure.
RERUNS = 2


def say(*args: Any) -> None:
    print(*args, flush=True)


class HarnessError(RuntimeError):
    """The harness could not run (exit status 2)."""


# -- the sdist -----------------------------------------------------------------


def fetch_sdist(version: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    # Self-ignoring, like .pytest_cache: the cache never shows in git status.
    (CACHE / ".gitignore").write_text("*\n")
    found = sorted(CACHE.glob(f"zaqar-{version}.tar.gz"))
    if not found:
        say(f"fetching the zaqar {version} sdist from PyPI")
        done = subprocess.run(  # noqa: S603 - our own argv
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "--disable-pip-version-check",
             "--dest", str(CACHE), f"zaqar=={version}"],
            capture_output=True, text=True)
        found = sorted(CACHE.glob(f"zaqar-{version}.tar.gz"))
        if done.returncode or not found:
            raise HarnessError(f"pip download zaqar=={version} failed:\n"
                               f"{done.stdout}{done.stderr}")
    return found[0]


def unpack(sdist: Path, version: str, into: Path) -> Path:
    top = f"zaqar-{version}"
    wanted = (f"{top}/zaqar/", f"{top}/PKG-INFO", f"{top}/test-requirements.txt")
    with tarfile.open(sdist) as tar:
        # Not zaqar.egg-info: its entry points would shadow the installed ones.
        members = [m for m in tar.getmembers()
                   if m.name.startswith(wanted) and (m.isfile() or m.isdir())]
        tar.extractall(into, members=members, filter="data")
    tree = into / top
    pkg_info = (tree / "PKG-INFO").read_text()
    got = re.search(r"^Version: (\S+)", pkg_info, re.M)
    if not got or got.group(1) != version:
        raise HarnessError(f"sdist {sdist.name} is version "
                           f"{got.group(1) if got else '?'}, installed is {version}")
    return tree


def same_as_installed(tree: Path) -> tuple[int, list[str]]:
    """Files of the sdist's zaqar package that differ from the installed one."""
    spec = find_spec("zaqar")
    if spec is None or spec.origin is None:
        raise HarnessError("zaqar is not installed")
    installed = Path(spec.origin).parent
    source = tree / "zaqar"
    checked, differ = 0, []
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        checked += 1
        other = installed / path.relative_to(source)
        if not other.is_file() or other.read_bytes() != path.read_bytes():
            differ.append(str(path.relative_to(tree)))
    return checked, differ


def ensure_test_requirements(tree: Path) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    needed = {canonicalize_name(n) for n in NEEDED}
    missing = []
    for line in (tree / "test-requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if canonicalize_name(req.name) not in needed:
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            missing.append(str(req))
    if not missing:
        return
    say(f"installing Zaqar's test requirements: {' '.join(missing)}")
    # Everything already installed stays at its version.
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable",
         "--disable-pip-version-check"], capture_output=True, text=True, check=True)
    names = {canonicalize_name(Requirement(m).name) for m in missing}
    pins = [ln for ln in frozen.stdout.splitlines() if "==" in ln
            and canonicalize_name(ln.split("==")[0]) not in names]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as c:
        c.write("\n".join(pins) + "\n")
    try:
        done = subprocess.run(  # noqa: S603 - our own argv
            [sys.executable, "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "-c", c.name, *missing],
            capture_output=True, text=True)
    finally:
        os.unlink(c.name)
    if done.returncode:
        raise HarnessError(f"pip install {' '.join(missing)} failed:\n"
                           f"{done.stdout}{done.stderr}")


# -- one mode --------------------------------------------------------------------


def _child_env(tree: Path, record: Path, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "ZAQAR_TEST", "ZAQAR_SUITE_", "OS_"))}
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                    os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        # As Zaqar's tox.ini sets them.
        "ZAQAR_TESTS_CONFIGS_DIR": str(tree / "zaqar" / "tests" / "etc") + "/",
        "ZAQAR_TEST_MONGODB": "1",
        "ZAQAR_TEST_REDIS": "1",
        "ZAQAR_TEST_SLOW": "1",
        "ZAQAR_SUITE_MODE": mode,
        "ZAQAR_SUITE_HMAC_KEY": HMAC_KEY,
        "ZAQAR_SUITE_RECORD_DIR": str(record),
    })
    return env


def run_mode(letter: str, tree: Path, results: Path, pytest_args: list[str],
             timeout: float, overrides: list[str], name: str = "") -> dict[str, Any]:
    """Run mode ``letter`` into ``results/<name or letter>/``."""
    from harness.servers import MongoServer
    from zaqar_otel.demo.processes import RedisServer
    from zaqar_otel.demo.receiver import OTLPReceiver

    record = results / (name or letter)
    record.mkdir(parents=True, exist_ok=True)
    junit = record / "junit.xml"
    log = record / "pytest.log"
    env = _child_env(tree, record, MODES[letter][0])
    if overrides and letter != "a":
        env["ZAQAR_SUITE_SET"] = ";".join(overrides)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        # Fresh servers per mode: no run sees another's data.
        mongo = stack.enter_context(MongoServer())
        redis = stack.enter_context(RedisServer())
        env["ZAQAR_TEST_MONGODB_URL"] = mongo.url
        env["ZAQAR_TEST_REDIS_URL"] = redis.url
        receiver = None
        if letter in ("b", "c"):
            receiver = stack.enter_context(OTLPReceiver())
            env["ZAQAR_SUITE_OTLP_ENDPOINT"] = receiver.endpoint
        profiler_redis = None
        if letter == "d":
            profiler_redis = stack.enter_context(RedisServer())
            env["ZAQAR_SUITE_OSPROFILER_CONNECTION"] = profiler_redis.url
        cmd = [sys.executable, "-m", "pytest", "-p", "peers.zaqar_suite.plugin",
               "-p", "no:cacheprovider", "-q", "-W", "ignore::DeprecationWarning",
               f"--junitxml={junit}", *_paths(pytest_args, SCOPE.get(letter, SUITE))]
        with open(log, "wb") as sink:
            try:
                done = subprocess.run(cmd, cwd=tree, env=env, stdout=sink,  # noqa: S603
                                      stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise HarnessError(f"mode ({letter}) took over {timeout:.0f} s; "
                                   f"see {log}") from exc
        seconds = time.monotonic() - started
        if done.returncode not in (0, 1) or not junit.is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise HarnessError(f"pytest of mode ({letter}) ended with status "
                               f"{done.returncode}:\n{tail}")
        meta: dict[str, Any] = {"seconds": seconds, "pytest_args": pytest_args}
        if receiver is not None:
            _settle(receiver)
            meta["export_requests"] = receiver.requests
            with open(record / "otlp-requests.bin", "wb") as raw:
                for body in receiver.raw:
                    raw.write(len(body).to_bytes(4, "big") + body)
        if profiler_redis is not None:
            import redis as redis_lib

            with redis_lib.Redis.from_url(profiler_redis.url) as client:
                meta["osprofiler_traces"] = len(client.keys("osprofiler_opt:*"))
        (record / "meta.json").write_text(json.dumps(meta))
    return load_mode(letter, results, name)


def load_mode(letter: str, results: Path, name: str = "") -> dict[str, Any]:
    """What one mode left in ``results/<name or letter>/``."""
    from zaqar_otel.demo.receiver import decode_request

    record = results / (name or letter)
    mode, title = MODES[letter]
    out: dict[str, Any] = {"letter": letter, "mode": mode, "title": title,
                           **json.loads((record / "meta.json").read_text())}
    out["results"] = compare.read_junit(record / "junit.xml")
    out["session"] = json.loads((record / "session.json").read_text())
    injected = record / "injected.jsonl"
    out["injected"] = ([json.loads(ln) for ln in injected.read_text().splitlines()]
                       if injected.is_file() else [])
    bodies = record / "bodies.json"
    out["bodies"] = json.loads(bodies.read_text()) if bodies.is_file() else {}
    raw_file = record / "otlp-requests.bin"
    out["raw"], out["spans"] = [], []
    if raw_file.is_file():
        data = raw_file.read_bytes()
        at = 0
        while at < len(data):
            size = int.from_bytes(data[at:at + 4], "big")
            out["raw"].append(data[at + 4:at + 4 + size])
            at += 4 + size
        out["spans"] = [s for body in out["raw"] for s in decode_request(body)]
    return out


def _paths(pytest_args: list[str], suite: tuple[str, ...]) -> list[str]:
    """The suite, or the part of it that extra arguments name (zaqar/...)."""
    named = [a for a in pytest_args if a.startswith("zaqar/")]
    if named:
        named = [a for a in named if a.startswith(suite)]
        if not named:  # none of what was asked is in this mode's scope
            named = list(suite)
    return [*(named or suite), *(a for a in pytest_args if not a.startswith("zaqar/"))]


def _settle(receiver: Any, quiet: float = 1.0, limit: float = 30.0) -> None:
    """Wait until no export request arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    seen = -1
    while time.monotonic() < deadline and seen != receiver.requests:
        seen = receiver.requests
        time.sleep(quiet)


# -- reruns of new differences ------------------------------------------------------


def _rerun_name(letter: str, number: int) -> str:
    return f"{letter}-rerun{number}"


def _node_id(tree: Path, test_id: str) -> str:
    """``zaqar.a.test_b.Class::test`` -> ``zaqar/a/test_b.py::Class::test``."""
    classname, _, name = test_id.partition("::")
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        module = Path(*parts[:cut]).with_suffix(".py")
        if (tree / module).is_file():
            return "::".join([module.as_posix(), *parts[cut:], name])
    raise HarnessError(f"no test module in the sdist for {test_id}")


def rerun_new_differences(runs: dict[str, dict[str, Any]], tree: Path,
                          args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Run each strict mode's new differences again, ``RERUNS`` times."""
    verdict = compare.judge(_differences(runs), compare.read_known(KNOWN), STRICT)
    reruns: dict[str, list[dict[str, Any]]] = {}
    for letter, new in sorted(verdict.unlisted.items()):
        if letter not in STRICT:
            continue
        node_ids = [_node_id(tree, t) for t in sorted(new)]
        extra = [a for a in args.pytest_args if not a.startswith("zaqar/")]
        for number in range(1, RERUNS + 1):
            say(f"mode ({letter}) again, {len(node_ids)} new differences, "
                f"rerun {number} of {RERUNS} ...")
            reruns.setdefault(letter, []).append(run_mode(
                letter, tree, args.results, [*node_ids, *extra], args.timeout,
                args.set, _rerun_name(letter, number)))
    return reruns


def load_reruns(results: Path, letters: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The reruns a run left in ``results/`` (for ``--report-only``)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for letter in letters:
        for number in range(1, RERUNS + 1):
            name = _rerun_name(letter, number)
            if (results / name / "meta.json").is_file():
                found.setdefault(letter, []).append(load_mode(letter, results, name))
    return found


# -- report ------------------------------------------------------------------------


Differences = dict[str, dict[str, compare.Outcome]]  # mode -> test id -> outcome


def _differences(runs: dict[str, dict[str, Any]]) -> Differences:
    baseline = runs["a"]["results"]
    return {m: compare.differing(baseline, r["results"], _scope(m))
            for m, r in runs.items() if m != "a"}


def _check_session(run: dict[str, Any], tree: Path, version: str) -> None:
    session = run["session"]
    if not str(session["zaqar_file"]).startswith(str(tree)):
        raise HarnessError(f"mode ({run['letter']}) imported zaqar from "
                           f"{session['zaqar_file']}, not from the sdist tree")
    if session["zaqar_version"] != version:
        raise HarnessError(f"mode ({run['letter']}) ran zaqar "
                           f"{session['zaqar_version']}, expected {version}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peers.zaqar_suite",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="abcde",
                        help="which modes to run (default abcde; a is always run)")
    parser.add_argument("--results", type=Path, default=CACHE / "last-run",
                        help="where junit XML and logs are kept")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds one mode may take")
    parser.add_argument("--set", action="append", default=[], metavar="GROUP.OPT=VALUE",
                        help="an extra zaqar.conf override for modes b-e (experiments)")
    parser.add_argument("--jobs", type=int,
                        default=int(os.environ.get("ZAQAR_OTEL_PEER_JOBS", "1")),
                        help="modes run at a time (each has its own servers; the "
                        "suite mostly waits: 2 halve the time on two cores)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: check and report what --results holds")
    parser.add_argument("pytest_args", nargs="*",
                        help="extra pytest arguments for every mode (after --)")
    args = parser.parse_args(argv)
    letters = ["a"] + [m for m in dict.fromkeys(args.modes) if m in MODES and m != "a"]
    started = time.monotonic()
    try:
        if args.report_only:
            letters = [m for m in letters if (args.results / m / "meta.json").is_file()]
            if "a" not in letters:
                raise HarnessError(f"no results of mode (a) in {args.results}")
            return report({m: load_mode(m, args.results) for m in letters},
                          args.results, started, load_reruns(args.results, letters))
        return _main(args, letters, started)
    except HarnessError as exc:
        say(f"zaqar suite: cannot run: {exc}")
        return 2


def _main(args: argparse.Namespace, letters: list[str], started: float) -> int:
    version = metadata.version("zaqar")
    sdist = fetch_sdist(version)
    work = Path(tempfile.mkdtemp(prefix="zaqar-suite-"))
    try:
        tree = unpack(sdist, version, work)
        checked, differ = same_as_installed(tree)
        if differ:
            raise HarnessError(f"the sdist's zaqar differs from the installed "
                               f"package in {len(differ)} files: {differ[:5]}")
        say(f"zaqar {version}: sdist {sdist.name}, {checked} files identical to "
            f"the installed package")
        ensure_test_requirements(tree)
        shutil.rmtree(args.results, ignore_errors=True)
        args.results.mkdir(parents=True)
        def one(letter: str) -> dict[str, Any]:
            say(f"mode ({letter}) {MODES[letter][1]} ...")
            run = run_mode(letter, tree, args.results, args.pytest_args,
                           args.timeout, args.set)
            _check_session(run, tree, version)
            say(f"  ({letter}) {run['seconds']:.0f} s")
            return run

        # Modes are independent (fresh SecantusDB, Redis and receiver each;
        # the one fixed address in Zaqar's suite, Redis on 6379, is only
        # connected to, never written), and mostly wait on Zaqar's own
        # sleeps, so two at a time halve the wall time on two cores.
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            runs = dict(zip(letters, pool.map(one, letters), strict=True))
        reruns = rerun_new_differences(runs, tree, args)
        return report(runs, args.results, started, reruns)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scope(letter: str) -> tuple[str, ...]:
    """Test id prefixes of a mode's part of the suite."""
    return tuple(p.replace("/", ".") + "." for p in SCOPE.get(letter, SUITE))


def report(runs: dict[str, dict[str, Any]], results: Path, started: float,
           reruns: dict[str, list[dict[str, Any]]] | None = None) -> int:
    baseline = runs["a"]["results"]
    diffs = _differences(runs)
    reruns = reruns or {}
    flakes = {m: compare.flaky(diffs[m], [r["results"] for r in reruns.get(m, [])])
              for m in diffs}
    for letter, flaky in flakes.items():
        for test_id in flaky:
            del diffs[letter][test_id]
    known = compare.read_known(KNOWN)
    partial = bool(runs["a"].get("pytest_args"))
    verdict = compare.judge(diffs, known, STRICT, set(baseline), partial)
    failures = list(verdict.failures)
    notes: list[str] = []

    say("")
    say(f"{'mode':<58} {'passed':>6} {'failed':>6} {'skipped':>7} {'differing':>9}")
    for letter, run in runs.items():
        c = compare.counts(run["results"])
        found = diffs.get(letter, {})
        listed = {k.test_id for k in known if letter in k.modes}
        extra = (f"  ({len(set(found) & listed)} listed, "
                 f"{len(set(found) - listed)} not)" if letter != "a" else "")
        say(f"({letter}) {run['title']:<54} {c['passed']:>6} {c['failed']:>6} "
            f"{c['skipped']:>7} {len(found) if letter != 'a' else '-':>9}{extra}"
            f"  {run['seconds']:.0f} s")
    failed_a = [t for t, o in baseline.items() if o.status in ("failed", "error")]
    if failed_a:
        notes.append(f"{len(failed_a)} tests do not pass on plain Zaqar either "
                     f"(not compared): " + ", ".join(sorted(failed_a)))
    skipped_a = sorted({o.message for o in baseline.values() if o.status == "skipped"})
    if skipped_a:
        notes.append("skipped on plain Zaqar: " + "; ".join(m[:80] for m in skipped_a))

    if "b" in runs:
        run = runs["b"]
        spans_report = spans.check(run["spans"], run["injected"], run["raw"],
                                   run["bodies"].get("secrets", []))
        if run["bodies"].get("flushed") is False:
            spans_report.failures.append("instrument.shutdown() did not flush "
                                         "within 60 s")
        say("")
        say("spans of (b): " + ", ".join(
            f"{k} {v}" for k, v in spans_report.stats.items()))
        failures += [f"spans of (b): {f}" for f in spans_report.failures]
        notes += [f"spans of (b): {n}" for n in spans_report.notes]
    if "c" in runs:
        got = runs["c"]["export_requests"]
        if got:
            failures.append(f"mode (c) exported {got} OTLP requests with "
                            "[profiler] enabled = false")
        else:
            notes.append("mode (c): nothing reached the OTLP receiver")
    if "d" in runs:
        signed = sum(1 for r in runs["d"]["injected"] if r["via"] == "wsgi")
        notes.append(f"mode (d): osprofiler's Redis driver holds "
                     f"{runs['d']['osprofiler_traces']} traces for {signed} signed "
                     "WSGI requests")
    for warning in verdict.warnings:
        notes.append(f"not in the list (plain Zaqar, not zaqar-otel): {warning}")
    for letter, flaky in sorted(flakes.items()):
        for test_id, outcome in sorted(flaky.items()):
            notes.append(f"flaky in ({letter}): {test_id} {outcome.status} once, then "
                         f"passed in {RERUNS} reruns: {compare.cause(outcome)}")

    say("")
    for note in notes:
        say(f"note: {note}")
    for failure in failures:
        say(f"FAIL: {failure}")
    for mode, new in verdict.unlisted.items():
        if mode in STRICT:
            _tracebacks(mode, new)
    minutes = (time.monotonic() - started) / 60
    say(f"\nresults in {results}; {minutes:.1f} min in all")
    if failures:
        say(f"zaqar suite: FAILED ({len(failures)} problems)")
        return 1
    say("zaqar suite: OK, tracing is transparent to Zaqar's own API tests")
    return 0


def _tracebacks(mode: str, new: dict[str, compare.Outcome]) -> None:
    """One traceback excerpt per distinct failure message."""
    seen: dict[str, list[str]] = {}
    for test_id, outcome in sorted(new.items()):
        key = compare.cause(outcome)
        seen.setdefault(key, []).append(test_id)
    for key, tests in seen.items():
        text = new[tests[0]].text
        say(f"\n--- mode ({mode}), {len(tests)} tests: {key}")
        for t in tests[:4]:
            say(f"    {t}")
        if len(tests) > 4:
            say(f"    ... and {len(tests) - 4} more")
        say("\n".join("    | " + ln for ln in text.splitlines()[-14:]))


if __name__ == "__main__":
    sys.exit(main())
