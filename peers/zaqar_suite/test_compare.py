"""The peer run's own logic: a flake, and a test id's file (no Zaqar run).

``python -m pytest peers/zaqar_suite/test_compare.py``; ``make peer-zaqar``
runs Zaqar's suite itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peers.zaqar_suite import compare, run


def test_zaqar_suite_flake_needs_every_rerun_to_pass(tmp_path: Path) -> None:
    failed = compare.Outcome(compare.FAILED, "AssertionError: 0.02 not greater than 1")
    diffs = {"m.T::race": failed, "m.T::broken": failed, "m.T::gone": failed}
    passed = compare.Outcome(compare.PASSED)
    reruns = [{"m.T::race": passed, "m.T::broken": passed, "m.T::gone": passed},
              {"m.T::race": passed, "m.T::broken": failed}]
    # Failing in one rerun, or missing from one, is not a flake.
    assert compare.flaky(diffs, reruns) == {"m.T::race": failed}
    assert compare.flaky(diffs, []) == {}

    (tmp_path / "zaqar" / "tests").mkdir(parents=True)
    (tmp_path / "zaqar" / "tests" / "test_claims.py").write_text("")
    assert (run._node_id(tmp_path, "zaqar.tests.test_claims.TestClaims::test_lifecycle")
            == "zaqar/tests/test_claims.py::TestClaims::test_lifecycle")
    with pytest.raises(run.HarnessError):
        run._node_id(tmp_path, "zaqar.tests.test_nothing.T::test")
