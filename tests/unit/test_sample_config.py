"""etc/zaqar-otel.conf.sample is what oslo-config-generator makes today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sample_config_is_current(tmp_path: Path) -> None:
    generated = tmp_path / "zaqar-otel.conf.sample"
    subprocess.run(
        [str(Path(sys.executable).parent / "oslo-config-generator"),
         "--config-file", str(ROOT / "etc" / "zaqar-otel-config-generator.conf"),
         "--output-file", str(generated)],
        check=True, cwd=ROOT)
    committed = (ROOT / "etc" / "zaqar-otel.conf.sample").read_text()
    assert generated.read_text() == committed, (
        "etc/zaqar-otel.conf.sample is stale: run `tox -e genconfig`")


def test_sample_documents_every_option() -> None:
    """Every option zaqar-otel adds appears, with its help, in the sample."""
    from zaqar_otel import opts

    sample = (ROOT / "etc" / "zaqar-otel.conf.sample").read_text()
    for _, group_opts in opts.list_opts():
        for opt in group_opts:
            assert f"#{opt.dest} = " in sample, opt.dest
            assert opt.help.split()[0] in sample
