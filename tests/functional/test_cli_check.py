"""The installed ``zaqar-otel`` console script, run as an operator runs it.

``check`` probes real OTLP receivers (HTTP and gRPC) and closed ports, all on
127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zaqar_otel.demo.processes import free_port
from zaqar_otel.demo.receiver import OTLPReceiver

pytestmark = pytest.mark.functional

SCRIPT = Path(sys.executable).parent / "zaqar-otel"

PROFILER = """\
[DEFAULT]
pooling = false

[drivers]
message_store = redis
management_store = sqlalchemy

[profiler]
enabled = true
hmac_keys = 6f1d0c9e-functional
trace_wsgi_transport = true
trace_message_store = true
trace_management_store = true
trace_redis = true
trace_sqlalchemy = true
"""


def zaqar_otel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the console script with no OTEL_* variable of the machine."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "OSPROFILER_"))}
    done = subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def write_conf(tmp_path: Path, otel: str) -> str:
    path = tmp_path / "zaqar.conf"
    path.write_text(f"{PROFILER}\n[opentelemetry]\n{otel}")
    return str(path)


def test_console_script_is_installed() -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} missing: pip install -e . first"


def test_check_http_receiver_answers(tmp_path: Path) -> None:
    with OTLPReceiver() as receiver:
        conf = write_conf(tmp_path, f"exporter = otlp_http\n"
                                    f"endpoint = {receiver.endpoint}\n")
        done = zaqar_otel("check", "--config-file", conf, cwd=tmp_path)
        requests = receiver.requests
    assert done.returncode == 0, done.stdout + done.stderr
    assert "collector                  answers: HTTP 200" in done.stdout
    assert receiver.traces_url in done.stdout
    assert "No problems found." in done.stdout
    assert requests == 1


def test_check_grpc_receiver_answers(tmp_path: Path) -> None:
    with OTLPReceiver(protocol="grpc") as receiver:
        conf = write_conf(tmp_path, f"exporter = otlp_grpc\n"
                                    f"endpoint = {receiver.endpoint}\n")
        done = zaqar_otel("check", "--config-file", conf, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"reachable at 127.0.0.1:{receiver.port}" in done.stdout


@pytest.mark.parametrize("exporter", ["otlp_http", "otlp_grpc"])
def test_check_closed_port_names_the_endpoint_option(
        tmp_path: Path, exporter: str) -> None:
    port = free_port()
    conf = write_conf(tmp_path, f"exporter = {exporter}\n"
                                f"endpoint = http://127.0.0.1:{port}\n")
    done = zaqar_otel("check", "--config-file", conf, "--timeout", "2",
                      cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unreachable" in done.stdout
    assert "set [opentelemetry] endpoint" in done.stdout
    assert f"127.0.0.1:{port}" in done.stdout


def test_check_stock_key_fails(tmp_path: Path) -> None:
    conf = tmp_path / "zaqar.conf"
    conf.write_text("[profiler]\nenabled = true\n")
    done = zaqar_otel("check", "--config-file", str(conf), cwd=tmp_path)
    assert done.returncode == 1
    assert "[profiler] hmac_keys" in done.stdout


def test_check_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    done = zaqar_otel("check", "--config-file", "nope.conf", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "zaqar-otel check: error: no such config file: nope.conf\n"


PROBE = """
import sys
from opentelemetry import trace
from osprofiler import profiler
from zaqar_otel.cmd import cli
original = profiler.trace_cls
code = cli.main(sys.argv[1:])
print("RESULT", code, "zaqar_otel.instrument" in sys.modules,
      type(trace.get_tracer_provider()).__name__, profiler.trace_cls is original,
      file=sys.stderr)
"""


def test_check_starts_no_tracing_and_patches_nothing(tmp_path: Path) -> None:
    with OTLPReceiver() as receiver:
        conf = write_conf(tmp_path, f"endpoint = {receiver.endpoint}\n")
        done = subprocess.run(
            [sys.executable, "-c", PROBE, "check", "--config-file", conf],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
        spans = receiver.spans()
    result = done.stderr.strip().splitlines()[-1]
    assert result == "RESULT 0 False ProxyTracerProvider True", done.stderr
    assert spans == []


def test_trace_id_console_script(tmp_path: Path) -> None:
    done = zaqar_otel("trace-id", "4A0B6A3E-1C2D-4E5F-8A9B-0C1D2E3F4A5B",
                      cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == (
        "OSProfiler base_id: 4a0b6a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b\n"
        "OTel trace id:      4a0b6a3e1c2d4e5f8a9b0c1d2e3f4a5b\n"
        "Jaeger:             http://localhost:16686/trace/"
        "4a0b6a3e1c2d4e5f8a9b0c1d2e3f4a5b\n")
    bad = zaqar_otel("trace-id", "not-an-id", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("zaqar-otel trace-id: error: ")
    usage = zaqar_otel(cwd=tmp_path)
    assert usage.returncode == 2
    helped = zaqar_otel("check", "--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "--config-file" in helped.stdout
