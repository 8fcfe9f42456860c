"""``zaqar-otel-server`` as a command: its name in --help, and the config
files it reads without --config-file (the ones ``zaqar-server`` reads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zaqar_otel.demo.processes import RedisServer, free_port, service_reachable

pytestmark = pytest.mark.functional

SERVER = str(Path(sys.executable).parent / "zaqar-otel-server")


def test_help_names_zaqar_otel_server() -> None:
    done = subprocess.run([SERVER, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: zaqar-otel-server "), done.stdout[:200]
    assert "--config-file" in done.stdout


def test_reads_zaqar_servers_default_config_file(
        tmp_path: Path, redis: RedisServer) -> None:
    """~/.zaqar/zaqar.conf, found as zaqar-server finds it."""
    port = free_port()
    (tmp_path / ".zaqar").mkdir()
    (tmp_path / ".zaqar" / "zaqar.conf").write_text(
        "[DEFAULT]\nauth_strategy =\n"
        "[drivers]\nmessage_store = redis\nmanagement_store = redis\n"
        f"[drivers:transport:wsgi]\nbind = 127.0.0.1\nport = {port}\n"
        f"[drivers:message_store:redis]\nuri = {redis.url}\n"
        f"[drivers:management_store:redis]\nuri = {redis.url}\n")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SERVER], cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HOME": str(tmp_path)})
    try:
        deadline = time.monotonic() + 90
        while not service_reachable("127.0.0.1", port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
