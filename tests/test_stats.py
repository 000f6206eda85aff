"""training/stats.py against known answers (t tables, a hand-computed interval) and its verdict wording."""

from __future__ import annotations

import math

import pytest

from training.stats import paired_gain, t_interval, t_quantile, verdict


@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (9, 2.262157), (30, 2.042272)])
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-5)


def test_t_quantile_lower_tail_and_bad_arguments():
    assert t_quantile(0.025, 4) == pytest.approx(-2.776445, abs=1e-5)
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        t_quantile(1.0, 4)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_t_interval_known_answer():
    # mean 3, sample sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.776445
    mean, low, high = t_interval([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(0.5)
    assert (mean, low, high) == pytest.approx((3.0, 3 - half, 3 + half), abs=1e-5)
    mean, low, high = t_interval([0.2, 0.2, 0.2])
    assert (low, high) == pytest.approx((0.2, 0.2))  # no spread, no width
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])


def test_paired_gain_pairs_by_seed():
    treated, control = [0.6, 0.7, 0.5, 0.9], [0.5, 0.5, 0.6, 0.5]
    g = paired_gain(treated, control)
    _, low, high = t_interval([0.1, 0.2, -0.1, 0.4])
    assert g["mean_gain"] == pytest.approx(0.15)
    assert g["ci95"] == pytest.approx([low, high])
    assert (g["wins"], g["seeds"]) == (3, 4)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_gain([0.1, 0.2], [0.1])


def test_verdict_follows_the_interval():
    assert verdict({"mean_gain": 0.21, "ci95": [0.12, 0.30], "wins": 5, "seeds": 5}, "video accuracy") == (
        "pretraining helps: +0.21 video accuracy, 95% CI [0.12, 0.30], pretrained ahead on 5/5 seeds")
    assert verdict({"mean_gain": 0.05, "ci95": [-0.02, 0.12], "wins": 3, "seeds": 5}, "video accuracy").startswith("no clear difference: +0.05")
    assert verdict({"mean_gain": -0.1, "ci95": [-0.2, -0.01], "wins": 0, "seeds": 5}, "clip accuracy").startswith("pretraining hurts: -0.10")
