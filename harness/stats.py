"""Bounds for counts drawn at a ratio: a check that holds but once in 10^6."""

from __future__ import annotations

import math

__all__ = ["binomial_bound", "binomial_bounds"]


def binomial_bound(n: int, p: float) -> int:
    """A count above which ``n`` draws at ``p`` land less than once in 10^6."""
    mean = n * p
    return int(mean + 8 * (mean * (1 - p)) ** 0.5 + 6)


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """The counts outside of which Binomial(n, p) falls with probability at
    most ``alpha`` (alpha / 2 each side)."""
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    low, tail = 0, 0.0
    while tail + pmf[low] <= alpha / 2:
        tail += pmf[low]
        low += 1
    high, tail = n, 0.0
    while tail + pmf[high] <= alpha / 2:
        tail += pmf[high]
        high -= 1
    return low, high
