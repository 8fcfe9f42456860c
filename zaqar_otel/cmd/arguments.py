"""argparse value types shared by the ``zaqar-otel`` commands::

    parser.add_argument("--timeout", type=seconds_up_to(600))
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def seconds_up_to(limit: float) -> Callable[[str], float]:
    """A type for a duration in seconds, above 0 and at most ``limit``."""

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value <= limit:
            raise argparse.ArgumentTypeError(
                f"not between 0 and {limit:g} s: {text!r}")
        return value

    return seconds
