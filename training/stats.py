"""Statistics for comparing runs over seeds: Student t intervals and the paired gain of one arm over another.

The t quantile comes from SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import t as student_t


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. ``t_quantile(0.975, 4)`` = 2.776)."""
    if not 0 < p < 1:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if df < 1:
        raise ValueError(f"t distribution needs df >= 1, got {df}")
    return float(student_t.ppf(p, df))


def t_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its two-sided t confidence interval over them.

    Needs at least two values (one value has no spread to estimate).
    """
    n = len(values)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_gain(treated: Sequence[float], control: Sequence[float], *, level: float = 0.95) -> dict:
    """The gain of ``treated`` over ``control`` paired by seed (index): ``{"mean_gain", "ci95", "wins", "seeds"}``.

    ``ci95``: the t interval of the per-seed differences ``treated[i] - control[i]`` (at ``level``, 0.95 by
    default, whatever the key says); ``wins``: seeds where treated is strictly ahead.
    """
    if len(treated) != len(control):
        raise ValueError(f"paired values need equal lengths, got {len(treated)} and {len(control)}")
    diffs = [t - c for t, c in zip(treated, control)]
    mean, low, high = t_interval(diffs, level=level)
    return {"mean_gain": mean, "ci95": [low, high], "wins": sum(d > 0 for d in diffs), "seeds": len(diffs)}


def outcome(gain: dict) -> str:
    """The verdict rule for a :func:`paired_gain` result: ``helps`` when its whole interval is above zero,
    ``hurts`` when it is below zero, otherwise ``no clear difference`` (an interval that touches zero included)."""
    low, high = gain["ci95"]
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "no clear difference"


def _numbers(gain: dict, metric: str, ahead: str) -> str:
    low, high = gain["ci95"]
    return f"{gain['mean_gain']:+.2f} {metric}, 95% CI [{low:.2f}, {high:.2f}], {ahead} ahead on {gain['wins']}/{gain['seeds']} seeds"


def verdict(gain: dict, metric: str) -> str:
    """One line saying what a :func:`paired_gain` result of pretrained over scratch supports: pretraining
    helps / hurts when the interval excludes zero, otherwise no clear difference."""
    result = outcome(gain)
    return f"{'pretraining ' if result != 'no clear difference' else ''}{result}: {_numbers(gain, metric, 'pretrained')}"


def compare_arms(values: dict[str, Sequence[float]], metric: str, *, level: float = 0.95) -> list[dict]:
    """Each arm after the first against the first, paired by seed (index): ``[{"a", "b", "metric", "mean_gain",
    "ci95", "wins", "seeds"}]`` with the gain ``b - a`` (:func:`paired_gain`); ``values``: arm -> per-seed values,
    the baseline first."""
    (a, control), *others = values.items()
    return [{"a": a, "b": b, "metric": metric, **paired_gain(treated, control, level=level)} for b, treated in others]


def comparison_verdict(comparison: dict, metric: str, *, name: str = "") -> str:
    """One line for a :func:`compare_arms` entry: ``NAME: B vs A: helps|hurts|no clear difference: numbers``
    (``name``: what is varied, e.g. ``model.head``; ``helps`` means B is better than A on ``metric``)."""
    b, a = comparison["b"], comparison["a"]
    return f"{name + ': ' if name else ''}{b} vs {a}: {outcome(comparison)}: {_numbers(comparison, metric, b)}"
