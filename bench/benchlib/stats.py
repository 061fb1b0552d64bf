"""Small statistics helpers: percentiles and median/min/max summaries."""

import math


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    if not s:
        return None
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def median(values):
    s = sorted(v for v in values if v is not None)
    if not s:
        return None
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summary(samples, unit):
    """{"median", "min", "max", "samples", "unit"} over the non-missing samples."""
    xs = [x for x in samples if x is not None]
    return {
        "median": median(xs),
        "min": min(xs) if xs else None,
        "max": max(xs) if xs else None,
        "samples": xs,
        "unit": unit,
    }
