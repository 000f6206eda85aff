"""The speed sampler follows docs/design.md §2 exactly (pure numpy, no video needed)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import LoaderConfig, SpeedSampler, order_label, sample_rng
from pipeline.sampler import permutation_rank

SPEEDS = (-8, -4, -2, -1, 1, 2, 4, 8)


def pretext(T=16, K=4, speeds=SPEEDS):
    return SpeedSampler(num_frames=T, speeds=speeds, mode="pretrain", num_clips=K)


def check_clips_follow_spec(clips, N, T, speeds):
    K = len(clips.speeds)
    assert clips.frame_indices.shape == (K, T)
    assert len(set(clips.speeds.tolist())) == K, "speeds must be distinct"
    for k, s in enumerate(clips.speeds.tolist()):
        f = clips.frame_indices[k]
        assert s in speeds and speeds[clips.speed_label[k]] == s
        # step |s| in playback order, reversed when s < 0: consecutive differences are exactly s
        assert np.all(np.diff(f) == s), (s, f)
        start = f.min()  # p: the first frame of the forward clip
        assert 0 <= start <= N - 1 - abs(s) * (T - 1)
        assert f.max() <= N - 1
        assert f[0] == (start if s > 0 else start + abs(s) * (T - 1))


@settings(max_examples=200, deadline=None)
@given(N=st.integers(1, 400), T=st.integers(1, 20), K=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_pretext_clips_follow_spec_or_video_is_excluded(N, T, K, seed):
    sampler = pretext(T=T, K=K)
    fitting = [s for s in SPEEDS if abs(s) * (T - 1) + 1 <= N]
    assert sampler.fitting_speeds(N) == tuple(fitting)
    if len(fitting) < K:
        assert "too short" in sampler.exclusion_reason(N)
        with pytest.raises(ValueError, match="too short"):
            sampler.sample(N, np.random.default_rng(seed))
        return
    assert sampler.exclusion_reason(N) is None
    clips = sampler.sample(N, np.random.default_rng(seed))
    check_clips_follow_spec(clips, N, T, SPEEDS)
    assert set(clips.speeds.tolist()) <= set(fitting), "a speed that does not fit was drawn"


def test_short_video_never_draws_speeds_that_do_not_fit_and_draws_all_that_do():
    # N=40, T=8: spans are 8, 15, 29, 57 for |s| = 1, 2, 4, 8, so +-8 cannot fit
    sampler, drawn = pretext(T=8, K=4), set()
    for seed in range(300):
        clips = sampler.sample(40, np.random.default_rng(seed))
        check_clips_follow_spec(clips, 40, 8, SPEEDS)
        drawn |= set(clips.speeds.tolist())
    assert drawn == {-4, -2, -1, 1, 2, 4}


def test_starts_are_uniform_over_exactly_the_starts_that_fit():
    sampler = SpeedSampler(num_frames=4, speeds=(-2, 2), mode="pretrain", num_clips=1)
    N = 10  # span 7 -> p in 0..3
    starts = [sampler.sample(N, np.random.default_rng(seed)).frame_indices.min() for seed in range(2000)]
    counts = np.bincount(starts, minlength=4)
    assert len(counts) == 4 and counts.min() > 400  # each of the 4 starts ~500 times


def test_order_label_is_rank_of_sorting_permutation():
    perms = list(itertools.permutations(range(4)))
    for perm in perms:
        assert permutation_rank(perm) == perms.index(perm)
    sampler, seen = pretext(K=4), set()
    for seed in range(500):
        clips = sampler.sample(200, np.random.default_rng(seed))
        perm = perms[clips.order_label]
        assert list(clips.speeds[list(perm)]) == sorted(clips.speeds.tolist())  # perm sorts the clips by speed
        assert clips.order_label == order_label(clips.speeds)
        seen.add(clips.order_label)
    assert len(seen) == 24, "every ordering of 4 clips should occur"


def test_union_covers_every_clip_frame_once():
    clips = pretext(T=16, K=4).sample(300, np.random.default_rng(3))
    union, positions = clips.union()
    assert np.all(np.diff(union) > 0)
    np.testing.assert_array_equal(union[positions], clips.frame_indices)
    assert set(union.tolist()) == set(clips.frame_indices.ravel().tolist())


def test_train_mode_one_speed1_clip_and_exclusion():
    sampler = SpeedSampler.from_config(LoaderConfig(mode="finetune", num_frames=8))
    clips = sampler.sample(8, np.random.default_rng(0))
    np.testing.assert_array_equal(clips.frame_indices, [np.arange(8)])
    assert clips.speeds.tolist() == [1] and clips.speed_label.tolist() == [SPEEDS.index(1)] and clips.order_label == 0
    assert sampler.exclusion_reason(7) is not None and sampler.exclusion_reason(8) is None
    starts = {int(sampler.sample(20, np.random.default_rng(s)).frame_indices[0, 0]) for s in range(200)}
    assert starts == set(range(13))


def test_eval_mode_evenly_spaced_deterministic():
    sampler = SpeedSampler.from_config(LoaderConfig(mode="eval", num_frames=8, num_eval_clips=5))
    clips = sampler.sample(48, np.random.default_rng(0))
    assert clips.frame_indices[:, 0].tolist() == [0, 10, 20, 30, 40]
    assert np.all(np.diff(clips.frame_indices, axis=1) == 1) and clips.order_label == 0
    again = sampler.sample(48, np.random.default_rng(123))
    np.testing.assert_array_equal(clips.frame_indices, again.frame_indices)
    single = SpeedSampler(num_frames=8, speeds=SPEEDS, mode="eval", num_eval_clips=1).sample(48, np.random.default_rng(0))
    assert single.frame_indices[0, 0] == 20


def test_rng_depends_on_seed_epoch_key_repeat_only():
    sampler = pretext()
    draw = lambda *a: sampler.sample(300, sample_rng(*a)).frame_indices  # noqa: E731
    np.testing.assert_array_equal(draw(0, 1, "abc"), draw(0, 1, "abc"))
    for other in [(1, 1, "abc"), (0, 2, "abc"), (0, 1, "abd"), (0, 1, "abc", 1)]:
        assert not np.array_equal(draw(0, 1, "abc"), draw(*other))


def test_config_validation():
    with pytest.raises(ValueError, match="non-zero"):
        LoaderConfig(speeds=(0, 1))
    with pytest.raises(ValueError, match="num_clips"):
        LoaderConfig(speeds=(1, 2), num_clips=3)
    with pytest.raises(ValueError, match="mode"):
        LoaderConfig(mode="pretext")  # the old name of pretrain
    with pytest.raises(ValueError, match="crop_size"):
        LoaderConfig(resize=100, crop_size=112)
    assert LoaderConfig(mode="eval", num_eval_clips=3).clips_per_sample == 3
