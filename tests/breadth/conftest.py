"""The wheel under test, for every breadth test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.breadth import matrix


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zaqar-otel's wheel: $ZAQAR_OTEL_WHEEL (what make breadth built), or
    one built from this tree."""
    given = os.environ.get("ZAQAR_OTEL_WHEEL")
    if given:
        return Path(given)
    return matrix.build_wheel(tmp_path_factory.mktemp("dist"))
