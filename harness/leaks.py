"""Secrets in exported bytes (or log lines): found in any text form a
span could carry them in (as they are, a uuid's dashed form, base64), and
the bytes around each one for a failure report."""

from __future__ import annotations

import base64
import uuid

__all__ = ["leaked", "where_leaked"]


def leaked(raw: list[bytes], secrets: set[str]) -> set[str]:
    """The secrets found in exported bytes, as hex, uuid or base64 text."""
    blob = b"\n".join(raw).lower()
    found = set()
    for secret in secrets:
        forms = {secret.lower()}
        try:
            forms.add(str(uuid.UUID(secret)))
        except ValueError:
            pass
        forms.add(base64.b64encode(secret.encode()).decode().lower())
        if any(form.encode() in blob for form in forms):
            found.add(secret)
    return found


def where_leaked(raw: list[bytes], found: set[str], width: int = 120) -> list[str]:
    """The exported bytes around each leaked secret, for the failure report."""
    blob = b"\n".join(raw)
    lines = []
    for secret in sorted(found):
        forms = [secret, base64.b64encode(secret.encode()).decode()]
        try:
            forms.append(str(uuid.UUID(secret)))
        except ValueError:
            pass
        for form in forms:
            at, shown = blob.lower().find(form.lower().encode()), 0
            while at >= 0 and shown < 3:
                context = blob[max(0, at - width):at + len(form) + width]
                lines.append(f"{secret}: ...{context!r}...")
                at = blob.lower().find(form.lower().encode(), at + len(form))
                shown += 1
    return lines
