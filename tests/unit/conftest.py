"""Fixtures of the unit tests that run ``zaqar-otel`` in-process."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from zaqar_otel.cmd import cli


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* or OSPROFILER_* variable of the machine reaches a test
    (a module that needs it says ``pytest.mark.usefixtures``)."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "OSPROFILER_")):
            monkeypatch.delenv(name)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``zaqar-otel ARGV...`` in-process -> (exit status, stdout, stderr)."""

    def _run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return _run
