"""``make breadth``: zaqar-otel with every Zaqar release and Python it declares.

Each job gets a venv of its own, made with that Python's ``venv`` module and
its bundled pip, never upgraded (the pip an operator has), with zaqar-otel
installed as the wheel built from this tree. A venv is cached under
``.cache/breadth/<job>-<key>``, the key a hash of the Python, the Zaqar
release, pyproject.toml and the job's recipe (as peers/keystone's Keystone
venv); every run reinstalls the freshly built wheel into it, without deps.
The tests run from this tree with ``--import-mode=append``, so they import
the installed wheel, not the checkout.

Jobs (``--list`` prints them):

* ``py3.X-zaqarR`` for Zaqar R in RELEASES and Python 3.X in PYTHONS where
  R allows it: the unit suite, then the smoke (SMOKE): a real Zaqar of that
  release under zaqar-otel-server, a profiled session checked at the
  receiver, on Redis + SQLite and on the MongoDB wire protocol (SecantusDB);
  what differs between releases (the root shape's oracle, the request id,
  the SQLAlchemy range); ``opentelemetry-instrument`` (the distro's range);
  a normal exit's flush (which differs by Python).
* ``full``: the whole default suite (``pytest``) on the newest pair, with
  the test extra (gunicorn, uwsgi, the MariaDB/PostgreSQL drivers).
* ``sdk-oldest``: unit + smoke on the oldest set the ranges admit, OTel
  1.45.0 / 0.66b0, with SQLAlchemy 2.0 (sdk-oldest.txt).
* ``sdk-1.45.2``: unit + smoke (no MongoDB: no pymongo instrumentation
  exists for it) on the newest SDK on PyPI, outside the ranges: the next
  SDK, put in over the resolved set (sdk-1.45.2.txt).
* ``pip``: an operator's ``pip install zaqar-otel`` (and ``[zaqar]``) with
  every Python's bundled pip, as ``--dry-run`` (test_operator_pip.py).
* ``layouts``: a devstack-like venv and a distribution's packages
  (test_install_layouts.py); uwsgi is in the default suite.

Usage::

    python -m tests.breadth [--jobs N] [--only KIND,...] [--pair PY:ZAQAR]...

``--ci`` (what ``.ci/run`` passes) runs the corners (CORNERS: the newest
pair and the oldest Zaqar on the oldest Python, unit + smoke each, and the
OTel range's two ends) when the matrix's inputs (INPUTS: the pins, the
declared Zaqar and Python set, tests/breadth itself) hash to what
``full-matrix.passed`` records, and every job otherwise. A run of every
job that passes writes that file anew: commit it with the change that made
the matrix run.

KIND is pairs, full, sdk, pip or layouts; ``--pair 3.12:21.0.3`` (or a tox
env name, ``breadth-zaqar21-on312``) runs that pair alone. A Python
is found as ``$ZAQAR_OTEL_PYTHON3_X``, ``python3.X`` on PATH, or pyenv's
newest 3.X; a missing one skips its jobs, and fails them when $CI is set.
The table goes to stdout and to .cache/breadth/matrix.md (and .json);
logs to .cache/breadth/logs/. Exit status 1 when a job failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "breadth"
LOGS = CACHE / "logs"

#: The Zaqar releases the package declares (``zaqar >= 20.1, < 24``): the
#: newest of each series, with the oldest Python each one's metadata allows.
RELEASES = {"20.1.3": (3, 9), "21.0.3": (3, 10), "22.0.3": (3, 10), "23.0.1": (3, 11)}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
NEWEST = ("3.13", "23.0.1")

#: The smoke of every pair (see the module docstring).
SMOKE = (
    "tests/functional/test_tracing.py::test_profiled_session_redis_and_sql[sqlite]",
    "tests/functional/test_tracing.py::test_profiled_session_mongodb",
    "tests/functional/test_zaqar_release.py",
    "tests/functional/test_root_shape.py",
    "tests/functional/test_opentelemetry_instrument.py"
    "::test_runner_gives_the_same_trace_with_otel_variables",
    "tests/functional/test_python_exit.py",
)
#: Which smoke test traces which store.
STORES = {
    "Redis": "test_profiled_session_redis_and_sql[sqlite]",
    "SQLite": "test_profiled_session_redis_and_sql[sqlite]",
    "Mongo-wire": "test_profiled_session_mongodb",
}
#: Test-extra packages the pairs leave out: servers, linters, database
#: drivers and the build backend only the full suite uses.
FULL_ONLY = {"zaqar", "gunicorn", "uwsgi", "pymysql", "psycopg2-binary", "ruff",
             "mypy", "setuptools"}
#: Bump when the way venvs are built changes (part of every key).
RECIPE = "1"
#: The jobs ``--ci`` runs while the inputs are unchanged: newest x newest
#: (the whole suite), oldest Zaqar x oldest Python, the SDK range's two ends.
#: (The newest pair runs unit + smoke there, as every pair does: `make test`
#: in the same CI run has run the whole suite already.)
NEWEST_PAIR = f"py{NEWEST[0]}-zaqar{NEWEST[1]}"
CORNERS = (NEWEST_PAIR, f"py{PYTHONS[0]}-zaqar{min(RELEASES)}", "sdk-oldest",
           "sdk-1.45.2")
#: What decides the matrix's verdict beyond the code: the pins and the
#: declared Zaqar / Python set (pyproject.toml, setup.py) and this folder.
INPUTS = ("pyproject.toml", "setup.py", "tests/breadth")
#: The digest of INPUTS when every job last passed (committed).
PASSED = HERE / "full-matrix.passed"


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # pairs, full, sdk, pip, layouts
    python: str
    zaqar: str = ""
    extras: str = ""
    tools: bool = True
    constraints: str | None = None  # a file of tests/breadth
    override: str | None = None  # installed --no-deps over the resolved set
    drop: tuple[str, ...] = ()
    pip_check: bool = True
    suites: tuple[tuple[str, tuple[str, ...]], ...] = ()
    timeout: float = 900.0


@dataclass
class Result:
    job: Job
    status: str = "ok"  # ok, failed, skipped
    why: str = ""
    venv_seconds: float = 0.0
    venv_built: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    suites: dict[str, dict[str, object]] = field(default_factory=dict)
    seconds: float = 0.0


def jobs(corners: bool = False) -> list[Job]:
    """Every job; with ``corners``, CORNERS alone (the newest pair as a pair)."""
    if corners:
        return [j for j in jobs() + [_pair(*NEWEST)] if j.name in CORNERS]
    unit = ("unit", ("tests/unit",))
    smoke = ("smoke", SMOKE)
    out = [Job("full", "full", NEWEST[0], NEWEST[1], extras="test", tools=False,
               suites=(("full", ()),), timeout=2400.0)]
    for release, oldest in RELEASES.items():
        for python in PYTHONS:
            too_old = tuple(map(int, python.split("."))) < oldest
            if too_old or (python, release) == NEWEST:
                continue
            out.append(_pair(python, release))
    out += [
        Job("sdk-oldest", "sdk", NEWEST[0], NEWEST[1], constraints="sdk-oldest.txt",
            suites=(unit, smoke)),
        Job("sdk-1.45.2", "sdk", NEWEST[0], NEWEST[1], override="sdk-1.45.2.txt",
            drop=("opentelemetry-instrumentation-pymongo",), pip_check=False,
            suites=(unit, ("smoke", tuple(t for t in SMOKE if "mongodb" not in t)))),
        Job("pip", "pip", "3.11", suites=(
            ("pip", ("tests/breadth/test_operator_pip.py",
                     "tests/breadth/test_readme_install.py")),)),
        Job("layouts", "layouts", "3.11", suites=(
            ("layouts", ("tests/breadth/test_install_layouts.py",)),)),
    ]
    return out


# -- interpreters ---------------------------------------------------------------


def _pair(python: str, release: str) -> Job:
    return Job(f"py{python}-zaqar{release}", "pairs", python, release,
               suites=(("unit", ("tests/unit",)), ("smoke", SMOKE)))


def inputs_digest() -> str:
    """sha256 over INPUTS' files (names and bytes), PASSED itself left out."""
    digest = hashlib.sha256()
    for name in INPUTS:
        path = ROOT / name
        files = ([path] if not path.is_dir()
                 else sorted(p for p in path.rglob("*") if p.is_file()))
        for file in files:
            if file == PASSED or "__pycache__" in file.parts:
                continue
            digest.update(file.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def recorded_digest() -> str:
    """The digest PASSED records, or "" when there is none."""
    try:
        return PASSED.read_text().split()[0]
    except (OSError, IndexError):
        return ""


def _runs_as(python: str, minor: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys, ensurepip, venv; "
             "print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == minor


def find_python(minor: str) -> str | None:
    """Python ``minor`` (say "3.12") with venv and ensurepip, or None."""
    named = os.environ.get(f"ZAQAR_OTEL_PYTHON{minor.replace('.', '_')}")
    if named:
        return named if _runs_as(named, minor) else None
    found = shutil.which(f"python{minor}")
    if found and _runs_as(found, minor):
        return found
    pyenv = shutil.which("pyenv")
    if not pyenv:
        return None
    done = subprocess.run([pyenv, "versions", "--bare"], capture_output=True,
                          text=True)
    versions = [v for v in done.stdout.split()
                if re.fullmatch(re.escape(minor) + r"\.\d+", v)]
    for version in sorted(versions, key=lambda v: int(v.rsplit(".", 1)[1]),
                          reverse=True):
        prefix = subprocess.run([pyenv, "prefix", version], capture_output=True,
                                text=True).stdout.strip()
        candidate = str(Path(prefix, "bin", f"python{minor}"))
        if prefix and _runs_as(candidate, minor):
            return candidate
    return None


def _python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import platform; "
                           "print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


# -- the wheel --------------------------------------------------------------------


#: Outside a git checkout: what copy_tree leaves out.
NOT_SOURCE = {".git", ".venv", ".cache", ".tox", "build", "dist", "__pycache__",
              ".pytest_cache", ".hypothesis", ".benchmarks"}


def _tree_files() -> list[str]:
    try:
        done = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], cwd=ROOT, capture_output=True)
    except OSError:
        done = None
    if done is not None and done.returncode == 0:
        return [f for f in done.stdout.decode().split("\0")
                if f and (ROOT / f).is_file()]
    return [str(path.relative_to(ROOT)) for path in ROOT.rglob("*")
            if path.is_file() and not NOT_SOURCE.intersection(
                path.relative_to(ROOT).parts)
            and not path.parts[-2].endswith(".egg-info")]


def copy_tree(dest: Path) -> Path:
    """This tree's files (tracked, and new ones git does not ignore) in
    ``dest``: a build there cannot pick up stale files of ./build."""
    for name in _tree_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def build_wheel(out: Path) -> Path:
    """Build zaqar-otel's wheel from a copy of this tree into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("zaqar_otel-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="zaqar-otel-src-") as tmp:
        src = copy_tree(Path(tmp))
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                   "--disable-pip-version-check", "-w", str(out), str(src)]
        try:  # this venv's setuptools when it is new enough, as the test extra has
            import setuptools

            if int(setuptools.__version__.split(".")[0]) >= 77:
                command.insert(4, "--no-build-isolation")
        except ImportError:
            pass
        subprocess.run(command, check=True, cwd=tmp)
    (wheel,) = out.glob("zaqar_otel-*.whl")
    return wheel


# -- venvs ------------------------------------------------------------------------


def requires(wheel: Path, extra: str | None = None) -> list[Requirement]:
    """The wheel's Requires-Dist: its dependencies, or those of ``extra``
    alone; without their markers."""
    with zipfile.ZipFile(wheel) as whl:
        (name,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        message = HeaderParser().parsestr(whl.read(name).decode())
    out = []
    for line in message.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if extra is None and req.marker is None or extra is not None and (
                req.marker is not None and req.marker.evaluate({"extra": extra})):
            req.marker = None
            out.append(req)
    return out


def smoke_tools(wheel: Path) -> list[str]:
    """The test extra without FULL_ONLY."""
    return [str(r) for r in requires(wheel, "test")
            if canonicalize_name(r.name) not in FULL_ONLY]


def _key(job: Job, python_version: str) -> str:
    parts = [RECIPE, python_version, job.zaqar, job.extras, str(job.tools),
             " ".join(job.drop), (ROOT / "pyproject.toml").read_text()]
    for name in (job.constraints, job.override):
        parts.append((HERE / name).read_text() if name else "")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


# The commands running now, each the leader of a process group of its own:
# an interrupted or timed-out run stops them (SIGINT first, so that pytest
# stops the servers it started), and nothing else.
_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()
_stopping = threading.Event()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _run_logged(command: Sequence[str | os.PathLike[str]], log: Path,
                timeout: float, cwd: Path = ROOT,
                env: dict[str, str] | None = None) -> int:
    if _stopping.is_set():
        return -2
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, command))}\n")
        out.flush()
        proc = subprocess.Popen(list(map(str, command)), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        with _children_lock:
            _children.add(proc)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            out.write(f"\n(timed out after {timeout:.0f} s)\n")
            return -1
        finally:
            with _children_lock:
                _children.discard(proc)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _tail(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace").splitlines()
    pick = [line for line in text if "ResolutionImpossible" in line
            or "conflict is caused by" in line or "ERROR" in line]
    return "\n".join((pick or text)[-lines:])


def ensure_venv(job: Job, python: str, wheel: Path, result: Result) -> Path | None:
    """The job's venv (built unless cached), with ``wheel`` freshly in it."""
    key = _key(job, _python_version(python))
    venv = CACHE / f"{job.name}-{key}"
    stamp = venv / ".breadth-ready"
    log = LOGS / f"{job.name}-install.log"
    started = time.monotonic()
    if not stamp.exists():
        result.venv_built = True
        for old in CACHE.glob(f"{job.name}-*"):
            if old.is_dir():
                shutil.rmtree(old)
        log.write_text(f"{job.name}: building {venv.name}\n")
        pip = venv / "bin" / "pip"
        install = [pip, "install", "--disable-pip-version-check", "--no-input"]
        if job.constraints:
            install += ["-c", HERE / job.constraints]
        install += [f"zaqar=={job.zaqar}",
                    f"{wheel}[{job.extras}]" if job.extras else wheel]
        install += smoke_tools(wheel) if job.tools else []
        steps: list[list[str | os.PathLike[str]]] = [
            [python, "-m", "venv", venv], [pip, "--version"], install]
        if job.override:
            steps.append([pip, "install", "--disable-pip-version-check", "--no-deps",
                          "-r", HERE / job.override])
        if job.drop:
            steps.append([pip, "uninstall", "--yes", *job.drop])
        if job.pip_check:
            steps.append([pip, "check"])
        for step in steps:
            if _run_logged(step, log, timeout=1800) != 0:
                result.status, result.why = "failed", (
                    f"venv: `{' '.join(map(str, step[1:4]))} ...` failed:\n"
                    + _tail(log))
                return None
        stamp.write_text(json.dumps({"job": job.name, "key": key}))
    reinstall = [venv / "bin" / "pip", "install", "--disable-pip-version-check",
                 "--quiet", "--no-deps", "--force-reinstall", wheel]
    if _run_logged(reinstall, log, timeout=600) != 0:
        result.status, result.why = "failed", "reinstalling the wheel:\n" + _tail(log)
        return None
    result.venv_seconds = time.monotonic() - started
    return venv


VERSIONS = """
import json, platform
from importlib import metadata
out = {"python": platform.python_version()}
for name in ("pip", "zaqar", "opentelemetry-sdk", "opentelemetry-instrumentation",
             "sqlalchemy", "greenlet"):
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name] = "-"
print(json.dumps(out))
"""


def _versions(python: Path) -> dict[str, str]:
    done = subprocess.run([python, "-c", VERSIONS], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    return json.loads(done.stdout) if done.returncode == 0 else {}


# -- running ----------------------------------------------------------------------


def _junit(path: Path) -> dict[str, object]:
    """Each test's outcome (passed, failed, skipped, xfailed) and the counts."""
    outcomes: dict[str, str] = {}
    if path.exists():
        for case in ET.parse(path).getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome = "failed"
                elif child.tag == "skipped":
                    outcome = ("xfailed" if child.get("type") == "pytest.xfail"
                               else "skipped")
            # classname (the module's dotted path) + name: a test's id, as
            # names repeat across modules.
            outcomes[f"{case.get('classname', '')}::{case.get('name', '')}"] = outcome
    counts = {kind: sum(1 for o in outcomes.values() if o == kind)
              for kind in ("passed", "failed", "skipped", "xfailed")}
    return {**counts, "outcomes": outcomes}


#: A suite with this many failures or fewer reruns them alone, once.
RERUN_AT_MOST = 3


def run_suites(job: Job, python: Path, wheel: Path, result: Result) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "ZAQAR_OTEL_WHEEL": str(wheel)}
    for name, args in job.suites:
        xml = LOGS / f"{job.name}-{name}.xml"
        xml.unlink(missing_ok=True)
        log = LOGS / f"{job.name}-{name}.log"
        log.write_text("")
        # The job's own pytest cache (the checkout's is shared by the jobs
        # running side by side): what --last-failed reruns.
        cache = LOGS / f"{job.name}-{name}.pytest-cache"
        shutil.rmtree(cache, ignore_errors=True)
        command = [python.parent / "pytest", "--import-mode=append",
                   "-o", f"cache_dir={cache}", "-q", "-rfEs", *args]
        started = time.monotonic()
        code = _run_logged([*command, f"--junitxml={xml}"], log,
                           timeout=job.timeout, env=env)
        summary = _junit(xml)
        summary["seconds"] = round(time.monotonic() - started, 1)
        summary["exit"] = code
        result.suites[name] = summary
        if code == 0:
            continue
        failed = [n.rsplit("::", 1)[-1]
                  for n, o in summary["outcomes"].items()  # type: ignore[union-attr]
                  if o == "failed"]
        if 0 < len(failed) <= RERUN_AT_MOST:
            # A test that fails beside the other jobs (two at a time on two
            # cores) and passes alone is named as flaky, not hidden: the
            # table says so; a test that fails again fails the job.
            again = _run_logged([*command, "--last-failed", "--last-failed-no-failures",
                                 "none"], log, timeout=job.timeout, env=env)
            if again == 0:
                summary["flaky"] = failed
                result.why += (f"{name}: flaky (failed in the suite, passed "
                               f"alone): {failed}\n")
                continue
        result.status = "failed"
        result.why += f"{name}: exit {code}, failed: {failed or _tail(log)}\n"


def run_job(job: Job, wheel: Path) -> Result:
    result = Result(job)
    started = time.monotonic()
    try:
        if job.kind in ("pip", "layouts"):  # these tests make their own venvs
            python = Path(sys.executable)
        else:
            found = find_python(job.python)
            if found is None:
                result.status = "failed" if os.environ.get("CI") else "skipped"
                result.why = f"no python{job.python} (PATH, pyenv, $ZAQAR_OTEL_PYTHON)"
                return result
            venv = ensure_venv(job, found, wheel, result)
            if venv is None:
                return result
            python = venv / "bin" / "python"
        result.versions = _versions(python)
        run_suites(job, python, wheel, result)
    except Exception as exc:  # a broken job is a failed job, not a stopped matrix
        result.status, result.why = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = time.monotonic() - started
    return result


# -- the report -------------------------------------------------------------------


def _count(summary: dict[str, object] | None) -> str:
    if not summary:
        return "-"
    parts = [f"{summary[kind]} {kind}" for kind in
             ("passed", "failed", "skipped", "xfailed") if summary[kind]]
    flaky = summary.get("flaky")
    if flaky:
        parts.append(f"{len(flaky)} flaky: passed alone")  # type: ignore[arg-type]
    return f"{', '.join(parts) or 'nothing ran'} ({summary['seconds']} s)"


def _traced(result: Result) -> str:
    smoke = result.suites.get("smoke") or result.suites.get("full")
    if not smoke:
        return "-"
    outcomes: dict[str, str] = smoke["outcomes"]  # type: ignore[assignment]
    marks = []
    for store, test in STORES.items():
        outcome = next((o for key, o in outcomes.items()
                        if key == f"tests.functional.test_tracing::{test}"), None)
        marks.append(f"{store} " + {"passed": "yes", "failed": "NO"}.get(
            outcome or "", "-"))
    return ", ".join(marks)


def table(results: Sequence[Result]) -> str:
    head = ("| job | Python (pip) | Zaqar | OTel SDK | SQLAlchemy | venv | unit "
            "| smoke / suite | traced | result |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        v = r.versions
        venv = ("-" if not r.venv_seconds else
                f"{'built' if r.venv_built else 'cached'} {r.venv_seconds:.0f} s")
        other = next((s for n, s in r.suites.items() if n != "unit"), None)
        zaqar = v.get("zaqar", r.job.zaqar or "-")
        lines.append(
            f"| {r.job.name} | {v.get('python', r.job.python)} ({v.get('pip', '-')}) "
            f"| {zaqar} | {v.get('opentelemetry-sdk', '-')} "
            f"| {v.get('sqlalchemy', '-')} | {venv} | {_count(r.suites.get('unit'))} "
            f"| {_count(other)} | {_traced(r) if r.job.kind != 'pip' else '-'} "
            f"| {r.status} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.breadth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int,
                        default=int(os.environ.get("ZAQAR_OTEL_BREADTH_JOBS", "1")))
    parser.add_argument("--only", default="pairs,full,sdk,pip,layouts")
    parser.add_argument("--pair", action="append", default=[],
                        help="PY:ZAQAR (3.12:21.0.3) or a tox env name")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--ci", action="store_true",
                        help="the corners while the inputs are unchanged "
                        "since every job last passed, else every job")
    args = parser.parse_args(argv)
    kinds = set(args.only.split(","))
    todo = [j for j in jobs() if j.kind in kinds]
    digest = inputs_digest()
    if args.ci:
        if digest == recorded_digest():
            todo = [j for j in jobs(corners=True) if j.kind in kinds]
            print(f"breadth: the corners ({', '.join(CORNERS)}): the pins, the "
                  f"Zaqar / Python set and tests/breadth are as when every job "
                  f"passed ({PASSED.name})", flush=True)
        else:
            print(f"breadth: every job: the pins, the Zaqar / Python set or "
                  f"tests/breadth changed since every job passed ({PASSED.name} "
                  f"records another digest)", flush=True)
    if args.pair:
        todo = [j for j in jobs() if j.kind in ("pairs", "full")
                and any(_pair_matches(p, j) for p in args.pair)]
        if not todo:
            parser.error(f"no such pair: {' '.join(args.pair)} (Zaqar 23 needs "
                         "Python 3.11; --list shows the pairs)")
    if args.list:
        for j in todo:
            print(f"{j.name:24} {j.kind:8} python{j.python} zaqar {j.zaqar or '-'}")
        return 0
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    wheel = build_wheel(CACHE / "dist")
    print(f"breadth: {len(todo)} jobs, {args.jobs} at a time; wheel {wheel.name}",
          flush=True)
    lock = threading.Lock()

    def one(job: Job) -> Result:
        result = run_job(job, wheel)
        with lock:
            print(f"  {job.name:24} {result.status:8} {result.seconds:6.0f} s"
                  + (f"\n    {result.why.strip()}" if result.why else ""), flush=True)
        return result

    # The full suite first: the longest job, so it runs beside the others.
    signal.signal(signal.SIGTERM, _interrupt)
    pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
    try:
        results = list(pool.map(one, todo))
    except KeyboardInterrupt:
        _stopping.set()
        with _children_lock:
            running = list(_children)
        for proc in running:
            _stop(proc)
        pool.shutdown(wait=True, cancel_futures=True)
        print("breadth: interrupted", file=sys.stderr)
        return 130
    pool.shutdown()
    elapsed = time.monotonic() - started
    text = table(results)
    print("\n" + text + f"\n\n{len(results)} jobs in {elapsed / 60:.1f} min")
    # Again after the table, where a log's last lines (all CI may keep) show it.
    for r in results:
        if r.status == "failed":
            print(f"breadth: {r.job.name} failed: {r.why.strip()[-1500:]}")
    (CACHE / "matrix.md").write_text(text + f"\n\n{elapsed / 60:.1f} min\n")
    every_job = {j.name for j in jobs()}
    if {r.job.name for r in results} == every_job and all(
            r.status == "ok" for r in results):
        PASSED.write_text(f"{digest}\n# every job of tests/breadth passed with "
                          f"these inputs ({time.strftime('%Y-%m-%d')})\n")
        print(f"breadth: every job passed: {PASSED.relative_to(ROOT)} records it")
    (CACHE / "matrix.json").write_text(json.dumps(
        [{"job": r.job.name, "status": r.status, "why": r.why,
          "versions": r.versions, "venv_built": r.venv_built,
          "venv_seconds": round(r.venv_seconds, 1), "seconds": round(r.seconds, 1),
          "suites": r.suites} for r in results], indent=1))
    return 1 if any(r.status == "failed" for r in results) else 0


def _pair_matches(spec: str, job: Job) -> bool:
    spec = spec.removeprefix("breadth-")
    if ":" in spec:
        python, zaqar = spec.split(":", 1)
        return job.python == python and job.zaqar == zaqar
    found = re.fullmatch(r"zaqar(\d+)-on(\d)(\d+)", spec)
    return bool(found) and job.zaqar.split(".")[0] == found.group(1) and (
        job.python == f"{found.group(2)}.{found.group(3)}")  # type: ignore[union-attr]
