"""Figures over several draws of forget authors: a mean with its 95% interval, and rank agreement between two sets of
draws.

One draw of two forget authors moves forget quality tenfold or more, so a benchmark reports each figure over several
draws: the mean, and Student's t interval for it (the draws are few, and their spread unknown). The interval is cut to
the range the metric can take (forget quality and ratios are not negative), and is absent for a single draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def mean_interval(
    values: Sequence[float | None], confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None
) -> dict:
    """`mean`, `low`, `high` (Student's t interval for the mean at `confidence`, cut to `bounds`), `n` and `values`
    of the values that are not None or NaN. With one value the interval is None; with none, everything is."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    result = {"mean": None, "low": None, "high": None, "n": len(kept), "values": kept}
    if not kept:
        return result
    result["mean"] = float(np.mean(kept))
    if len(kept) > 1:
        half_width = stats.t.ppf((1 + confidence) / 2, len(kept) - 1) * stats.sem(kept)
        low, high = result["mean"] - half_width, result["mean"] + half_width
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        result["low"], result["high"] = float(low), float(high)
    return result


def rank_agreement(first: Mapping[str, float], second: Mapping[str, float]) -> float | None:
    """Kendall's tau between the rankings that two mappings (name -> score) give the names they share; None when
    fewer than two names are shared."""
    names = sorted(set(first) & set(second))
    if len(names) < 2:
        return None
    return float(stats.kendalltau([first[n] for n in names], [second[n] for n in names]).statistic)
