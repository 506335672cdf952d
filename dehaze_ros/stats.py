"""Latency statistics shared by the node's diagnostics and the demo's summary line."""
from __future__ import annotations

from collections.abc import Iterable


def percentile(samples: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty set of samples.

    Nearest rank rather than interpolation: a reported p95 is then a latency that a frame
    really had, and the same rule gives the same number in diagnostics and in the demo.
    """
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("percentile of no samples")
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
