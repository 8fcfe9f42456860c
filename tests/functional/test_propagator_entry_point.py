"""The built package registers the propagator where OTel's loader finds it."""

import json
import os
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

from zaqar_otel.propagation import codec, idmap

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from opentelemetry import propagate, trace
import zaqar_otel.bridge as b
ctx = propagate.extract(json.loads(sys.argv[1]))
sc = trace.get_current_span(ctx).get_span_context()
print(json.dumps({"trace_id": sc.trace_id, "span_id": sc.span_id,
                  "module": b.__file__}))
"""


def test_otel_propagators_env_loads_osprofiler_in_a_fresh_venv(tmp_path):
    # Install the package as built (not the editable checkout) into a new
    # venv; its dependencies come from this test run's site-packages, listed
    # after the new venv's own so the built metadata is what OTel reads.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    py = venv / "bin" / "python"
    target = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", target, str(ROOT)],
        check=True, cwd=tmp_path)
    # The guard that keeps a typo in OTEL_PROPAGATORS from stopping any
    # process of the venv (zaqar_otel.propagation.env_guard) ships with the wheel.
    assert "zaqar_otel" in Path(target, "zaqar-otel.pth").read_text()
    Path(target, "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"])

    base_id, parent_id = str(uuid.uuid4()), str(uuid.uuid4())
    headers = codec.encode(base_id, parent_id, "ep-key")
    env = dict(os.environ, OTEL_PROPAGATORS="tracecontext,baggage,osprofiler",
               OSPROFILER_HMAC_KEYS="other,ep-key")
    out = subprocess.run([py, "-c", PROBE, json.dumps(headers)], env=env,
                         cwd=tmp_path, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    assert result["module"].startswith(target)
    assert result["trace_id"] == uuid.UUID(base_id).int
    assert result["span_id"] == idmap.span_id_from_uuid(parent_id)
