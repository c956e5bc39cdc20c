"""Seed statistics in pure Python: mean, sample std, and the one-sided Welch t-test.

The test is the one the leaderboard uses (rules.md Rule 4): scipy's
``ttest_ind(new, old - margin, equal_var=False, alternative='less')``, i.e. H1: mean(new) <
mean(old) - margin. The Student-t CDF comes from the regularized incomplete beta function,
evaluated with its continued fraction (modified Lentz), so `rules/` needs no scipy.

Degenerate inputs never raise:
* fewer than 2 values on either side: no variance estimate, ``p=None`` and a ``reason``;
* zero variance on both sides (identical values): the t statistic is undefined (0/0 or x/0),
  ``p=None`` and a ``reason``. A deterministic difference is not evidence of significance, and
  scipy returns NaN here as well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 500


def mean(xs: Iterable[float]) -> float:
    vals = list(xs)
    if not vals:
        raise ValueError("mean of no values")
    return math.fsum(vals) / len(vals)


def sample_std(xs: Iterable[float]) -> float | None:
    """Sample standard deviation (ddof=1); None for fewer than 2 values."""
    vals = list(xs)
    if len(vals) < 2:
        return None
    m = mean(vals)
    return math.sqrt(math.fsum((x - m) ** 2 for x in vals) / (len(vals) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _TINY if abs(d) < _TINY else d
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def betainc_regularized(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    # the continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (possibly fractional) degrees of freedom."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    x = df / (df + t * t)
    tail = 0.5 * betainc_regularized(df / 2.0, 0.5, x)   # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


@dataclass
class WelchResult:
    t: float | None
    df: float | None
    p: float | None                 # one-sided p for H1: mean(new) < mean(old) - margin
    reason: str | None = None       # why p is None
    n_new: int = 0
    n_old: int = 0
    mean_new: float | None = None
    mean_old: float | None = None
    margin: float = 0.0

    @property
    def delta(self) -> float | None:
        """mean(new) - mean(old) (negative is an improvement in bpb)."""
        if self.mean_new is None or self.mean_old is None:
            return None
        return self.mean_new - self.mean_old


def welch_one_sided(new: Sequence[float], old: Sequence[float], margin: float = 0.0) -> WelchResult:
    """One-sided Welch t-test of H1: mean(new) < mean(old) - margin (see the module docstring)."""
    new = [float(x) for x in new]
    old = [float(x) for x in old]
    res = WelchResult(t=None, df=None, p=None, n_new=len(new), n_old=len(old), margin=margin)
    if new:
        res.mean_new = mean(new)
    if old:
        res.mean_old = mean(old)
    if len(new) < 2 or len(old) < 2:
        res.reason = (f"a Welch test needs at least 2 values on each side "
                      f"(new has {len(new)}, baseline has {len(old)})")
        return res
    if any(math.isnan(x) or math.isinf(x) for x in new + old):
        res.reason = "the values include NaN or infinity"
        return res
    v1 = sample_std(new) ** 2 / len(new)
    v2 = sample_std(old) ** 2 / len(old)
    se2 = v1 + v2
    if se2 <= 0.0:
        res.reason = "both samples have zero variance, so the t statistic is undefined"
        return res
    diff = res.mean_new - (res.mean_old - margin)
    t = diff / math.sqrt(se2)
    den = (v1 * v1) / (len(new) - 1) + (v2 * v2) / (len(old) - 1)
    df = se2 * se2 / den
    res.t, res.df = t, df
    res.p = student_t_cdf(t, df)
    return res


def nats_per_bpb(val_loss: float | None, val_bpb: float | None) -> float | None:
    """The submission's own val_loss / val_bpb ratio (nats per token per bit per byte).

    val_bpb = val_loss / ln 2 * tokens / bytes, so the ratio depends on the tokenizer
    (about 1.69 for SP1024, 2.58 for SP8192; rules.md Rule 4)."""
    if not val_loss or not val_bpb or val_bpb <= 0 or val_loss <= 0:
        return None
    return val_loss / val_bpb


def margin_bpb(nats: float, ratio: float | None) -> float | None:
    """A margin in nats (the README's 0.005) converted to bpb with a nats-per-bpb ratio."""
    if ratio is None or ratio <= 0:
        return None
    return nats / ratio
