"""Test-by-test comparison of junit XML results against the plain-Zaqar run.

A test *differs* in a mode when it passed in mode (a), plain Zaqar, and did
not pass there (failed, errored, was skipped or is missing). Differences
that are not zaqar-otel's are listed, each with its reason and the modes it
shows in, in ``known_differences.txt``; the list is exact: a new difference
and a listed one that is gone both fail the run. A new difference that passes
in every rerun of its mode is *flaky*: printed with its cause, not a failure.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

PASSED, FAILED, ERROR = "passed", "failed", "error"
SKIPPED, MISSING = "skipped", "missing"
_RANK = {PASSED: 0, SKIPPED: 1, FAILED: 2, ERROR: 3}


@dataclass(frozen=True)
class Outcome:
    status: str
    message: str = ""
    text: str = ""


def read_junit(path: Path) -> dict[str, Outcome]:
    """``{"module.Class::test": Outcome}`` of one pytest junit XML file."""
    results: dict[str, Outcome] = {}
    # Our own pytest's output, not untrusted input.
    for case in ET.parse(path).iter("testcase"):  # noqa: S314
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = Outcome(PASSED)
        for child in case:
            tag = {"failure": FAILED, "error": ERROR, "skipped": SKIPPED}.get(child.tag)
            if tag and _RANK[tag] > _RANK[outcome.status]:
                outcome = Outcome(tag, child.get("message") or "", child.text or "")
        # A test reported twice (call, then teardown): keep the worse.
        old = results.get(test_id)
        if old is None or _RANK[outcome.status] > _RANK[old.status]:
            results[test_id] = outcome
    return results


def counts(results: dict[str, Outcome]) -> Counter[str]:
    c: Counter[str] = Counter(o.status for o in results.values())
    c[FAILED] += c.pop(ERROR, 0)
    return c


def differing(baseline: dict[str, Outcome], other: dict[str, Outcome],
              scope: tuple[str, ...] = ("",)) -> dict[str, Outcome]:
    """Tests (with an id starting with one of ``scope``) that passed in
    ``baseline`` and did not pass in ``other``."""
    return {t: other.get(t, Outcome(MISSING)) for t, o in baseline.items()
            if t.startswith(scope) and o.status == PASSED
            and other.get(t, Outcome(MISSING)).status != PASSED}


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Mismatch\w*|"
                             r"InvalidDriver|Exit|Interrupt)\b.*")


def cause(outcome: Outcome) -> str:
    """The last exception line of a traceback, else the message."""
    lines = [ln for ln in outcome.text.splitlines() if _EXCEPTION_LINE.match(ln)]
    found = lines[-1] if lines else (outcome.message or outcome.status)
    return found.splitlines()[0][:140] if found else outcome.status


@dataclass(frozen=True)
class Known:
    test_id: str
    modes: frozenset[str]
    reason: str
    line: int


def read_known(path: Path) -> list[Known]:
    """Entries ``<test id> | <modes> | <reason>``; ``#`` starts a comment."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{path.name}:{number}: expected "
                             f"'<test id> | <modes> | <reason>', got {raw!r}")
        modes = frozenset(parts[1].replace(",", " ").split())
        entries.append(Known(parts[0], modes, parts[2], number))
    return entries


@dataclass
class Verdict:
    """What the comparison found; ``failures`` make the run fail."""

    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unlisted: dict[str, dict[str, Outcome]] = field(default_factory=dict)


def judge(diffs: dict[str, dict[str, Outcome]], known: list[Known],
          strict_modes: set[str], ran: set[str] | None = None,
          partial: bool = False) -> Verdict:
    """Check every mode's differences against the list.

    ``diffs`` maps a mode letter to its differing tests. In a strict mode
    (the ones with zaqar-otel installed) an unlisted difference fails the
    run; in the others (plain Zaqar with something added) it is a warning.
    A listed mode where the test no longer differs always fails: the list,
    and the proof it records, must stay exact. A listed test that did not
    run in (a) (``ran``) fails too, unless the run was ``partial``.
    """
    verdict = Verdict()
    listed: dict[str, set[str]] = {m: set() for m in diffs}
    for entry in known:
        if ran is not None and entry.test_id not in ran:
            if not partial:
                verdict.failures.append(
                    f"known_differences.txt:{entry.line}: {entry.test_id} did not "
                    "run in (a): renamed or gone? update the list")
            continue
        for mode in diffs:
            if mode in entry.modes:
                listed[mode].add(entry.test_id)
                if entry.test_id not in diffs[mode]:
                    verdict.failures.append(
                        f"known_differences.txt:{entry.line}: {entry.test_id} is "
                        f"listed for mode ({mode}) but does not differ there any "
                        "more: update the list")
    for mode, found in diffs.items():
        new = {t: o for t, o in found.items() if t not in listed[mode]}
        if new:
            verdict.unlisted[mode] = new
            sink = verdict.failures if mode in strict_modes else verdict.warnings
            for test_id, outcome in sorted(new.items()):
                sink.append(f"mode ({mode}): {test_id} passed in (a), "
                            f"{outcome.status} here: {cause(outcome)}")
    return verdict


def flaky(diffs: dict[str, Outcome], reruns: list[dict[str, Outcome]]
          ) -> dict[str, Outcome]:
    """The tests of ``diffs`` (one mode's) that passed in every rerun.

    A test missing from a rerun did not pass there; no reruns, no flakes.
    """
    if not reruns:
        return {}
    return {t: o for t, o in diffs.items()
            if all(r.get(t, Outcome(MISSING)).status == PASSED for r in reruns)}
