"""Paired differences with Student-t confidence intervals (torch-free, pandas-free).

Runs with the same trial seed share their data splits, so two algorithms' runs on the same
trial seed and held-out domain (or the same source domain, single-source) form a pair; the
difference of a pair removes the part of the spread that comes from the split. For n pairs
with differences d_1..d_n:

    mean = sum(d) / n,   s = sqrt(sum((d - mean)^2) / (n - 1)),
    95% interval = mean -/+ t_{0.975, n-1} * s / sqrt(n)    (undefined for n < 2).

An interval that covers 0 is "no measurable difference".
"""
import dataclasses
import math
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

CONFIDENCE = 0.95


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value: t_{(1 + confidence) / 2, df}."""
    if df < 1:
        return float("nan")
    from scipy.stats import t  # the collector imports scipy only when it compares
    return float(t.ppf((1.0 + confidence) / 2.0, df))


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over n pairs and its confidence interval (nan bounds when n < 2)."""
    mean: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> str:
        """'higher', 'lower' or 'no difference' (the interval covers 0, or is undefined)."""
        if self.n < 2 or math.isnan(self.low) or math.isnan(self.high):
            return "no difference"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "no difference"


def paired_difference(diffs: Sequence[float],
                      confidence: float = CONFIDENCE) -> Optional[PairedDifference]:
    """The mean of paired differences and its Student-t interval; None without a pair."""
    d = [float(x) for x in diffs]
    n = len(d)
    if n == 0:
        return None
    mean = sum(d) / n
    if n < 2:
        return PairedDifference(mean, float("nan"), float("nan"), n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t_quantile(n - 1, confidence) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n)


def pair_up(values: Dict[Hashable, float], reference: Dict[Hashable, float]
            ) -> Tuple[List[float], List[Hashable], List[Hashable]]:
    """Differences values[k] - reference[k] over the keys both have with finite values, in
    sorted key order; plus the keys only `values` has and the keys only `reference` has (runs
    without a partner: named by the caller, never mixed in)."""
    def finite(x):
        return x is not None and not (isinstance(x, float) and math.isnan(x))

    mine = {k for k, v in values.items() if finite(v)}
    theirs = {k for k, v in reference.items() if finite(v)}
    both = sorted(mine & theirs)
    return ([values[k] - reference[k] for k in both], sorted(mine - theirs),
            sorted(theirs - mine))


def format_difference(diff: Optional[PairedDifference], scale: float = 100.0) -> str:
    """'+5.2 [+1.1, +9.3]' (x scale); 'X' without pairs; '+5.2 [n=1]' with one pair."""
    if diff is None:
        return "X"
    if diff.n < 2:
        return f"{scale * diff.mean:+.1f} [n=1]"
    return f"{scale * diff.mean:+.1f} [{scale * diff.low:+.1f}, {scale * diff.high:+.1f}]"
