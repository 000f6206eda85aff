"""training/stats.py's comparison of several arms: pairing by seed against the first arm, the verdict rule at its
edges, and the verdict lines' wording."""

from __future__ import annotations

import pytest

from training.stats import compare_arms, comparison_verdict, outcome, t_interval, verdict


def test_compare_arms_pairs_each_arm_with_the_first_by_seed():
    values = {"sort": [0.5, 0.6, 0.4], "speed": [0.6, 0.6, 0.7], "both": [0.4, 0.5, 0.6]}
    got = compare_arms(values, "video_acc")
    assert [(c["a"], c["b"], c["metric"], c["seeds"]) for c in got] == [("sort", "speed", "video_acc", 3), ("sort", "both", "video_acc", 3)]
    _, low, high = t_interval([0.1, 0.0, 0.3])
    assert got[0]["mean_gain"] == pytest.approx(0.4 / 3) and got[0]["ci95"] == pytest.approx([low, high])
    assert got[0]["wins"] == 2  # a tie is not a win
    assert got[1]["mean_gain"] == pytest.approx(0.0) and got[1]["wins"] == 1
    # pairing by seed, not by sorted value: the same numbers in another seed order give another interval
    shuffled = compare_arms({"sort": [0.5, 0.6, 0.4], "speed": [0.7, 0.6, 0.6]}, "video_acc")[0]
    assert shuffled["mean_gain"] == pytest.approx(got[0]["mean_gain"]) and shuffled["ci95"] != pytest.approx(got[0]["ci95"])
    with pytest.raises(ValueError, match="equal lengths"):
        compare_arms({"a": [0.1, 0.2], "b": [0.1]}, "video_acc")


@pytest.mark.parametrize("ci95, expected", [
    ([0.01, 0.2], "helps"), ([-0.2, -0.01], "hurts"), ([0.0, 0.2], "no clear difference"),
    ([-0.2, 0.0], "no clear difference"), ([-0.1, 0.1], "no clear difference"), ([0.0, 0.0], "no clear difference"),
])
def test_outcome_needs_the_whole_interval_on_one_side_of_zero(ci95, expected):
    assert outcome({"mean_gain": sum(ci95) / 2, "ci95": ci95, "wins": 1, "seeds": 3}) == expected


def test_comparison_verdict_names_the_arms():
    c = {"a": "bn", "b": "tgn", "metric": "video_acc", "mean_gain": 0.061, "ci95": [0.01, 0.11], "wins": 4, "seeds": 5}
    assert comparison_verdict(c, "video accuracy", name="model.norm") == (
        "model.norm: tgn vs bn: helps: +0.06 video accuracy, 95% CI [0.01, 0.11], tgn ahead on 4/5 seeds")
    c.update(mean_gain=-0.02, ci95=[-0.09, 0.05], wins=2)
    assert comparison_verdict(c, "clip accuracy") == "tgn vs bn: no clear difference: -0.02 clip accuracy, 95% CI [-0.09, 0.05], tgn ahead on 2/5 seeds"
    # the demo's own line keeps its wording
    assert verdict({"mean_gain": -0.1, "ci95": [-0.2, -0.01], "wins": 0, "seeds": 5}, "video accuracy") == (
        "pretraining hurts: -0.10 video accuracy, 95% CI [-0.20, -0.01], pretrained ahead on 0/5 seeds")
