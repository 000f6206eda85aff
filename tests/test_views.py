"""``pipeline/views.py``: crops and flips per clip, the frame-at-a-time ``ClipWriter`` and the batched cut, all
against ``assemble_clips``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.views import ClipWriter, View, assemble_clips


def test_augmentation_is_one_crop_and_flip_per_clip():
    frames = torch.randint(0, 256, (5, 20, 30, 3), dtype=torch.uint8)
    positions = np.array([[4, 2, 0], [1, 1, 3]])
    views = [View((20, 30), 3, 7, 10, False), View((20, 30), 10, 20, 10, True)]
    clips = assemble_clips(frames, positions, views)
    assert clips.shape == (2, 3, 10, 10, 3)
    torch.testing.assert_close(clips[0], frames[[4, 2, 0], 3:13, 7:17])
    torch.testing.assert_close(clips[1], frames[[1, 1, 3], 10:20, 20:30].flip(2))


def test_clip_writer_is_assemble_clips_one_frame_at_a_time():
    """The reference backend's direct path (no resize) gives exactly what ``assemble_clips`` gives, for any
    positions (repeats, shared frames), crops touching every edge, and flips; it reports frames not given."""
    rng = np.random.default_rng(0)
    frames = torch.randint(0, 256, (9, 20, 30, 3), dtype=torch.uint8)
    positions = rng.integers(0, 9, size=(4, 6))
    positions[0] = [0, 0, 8, 8, 3, 3]
    views = [View((20, 30), 0, 0, 10, True), View((20, 30), 10, 20, 10, True), View((20, 30), 5, 0, 10, False),
             View((20, 30), 10, 20, 10, False)]
    writer = ClipWriter(positions, views)
    used = sorted(set(positions.flat))
    for u in used[:-1]:
        writer.put(u, frames[u].numpy())
    assert writer.missing() == [used[-1]]
    writer.put(used[-1], frames[used[-1]].numpy())
    assert writer.missing() == []
    assert torch.equal(writer.clips, assemble_clips(frames, positions, views))
    with pytest.raises(ValueError, match="shape"):
        writer.put(0, frames[0, :10].numpy())


def test_gather_clips_is_assemble_clips_for_a_whole_batch():
    """The DALI GPU path's batched cut (one resize and one gather per group of equal sizes) gives exactly what
    ``assemble_clips`` gives sample by sample: mixed frame sizes, resized and not, flips, repeated frames,
    samples with different clip counts. Checked on the CPU (the same torch ops run on CUDA there)."""
    from pipeline.views import assemble_batch, gather_clips

    rng = np.random.default_rng(3)
    samples = []  # (frames, positions, views)
    for n, (height, width, resize, clips) in enumerate([(20, 30, (20, 30), 2), (24, 36, (20, 30), 3), (20, 30, (20, 30), 1),
                                                        (24, 36, (20, 30), 2), (20, 26, (20, 26), 4)]):
        frames = torch.randint(0, 256, (5 + n, height, width, 3), dtype=torch.uint8)
        positions = rng.integers(0, len(frames), size=(clips, 4))
        views = [View(resize, int(rng.integers(0, resize[0] - 9)), int(rng.integers(0, resize[1] - 9)), 10, bool(k % 2))
                 for k in range(clips)]
        samples.append((frames, positions, views))
    expected = [assemble_clips(*sample) for sample in samples]
    for cut in (gather_clips, assemble_batch):
        got = cut(*(list(part) for part in zip(*samples)))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert a.shape == b.shape and torch.equal(a, b)
    assert gather_clips([], [], []) == []
    with pytest.raises(ValueError, match="share one resize"):
        gather_clips([samples[0][0]], [samples[0][1]], [[View((20, 30), 0, 0, 10, False), View((20, 30), 0, 0, 8, False)]])
