"""The global order (pipeline/plan.py): for one global batch size the sequence of global batches (keys, clip
starts, speeds, crops, flips, pixels) is the same on 1, 2 and 3 ranks, any worker count and either backend;
the loader's ``start_batch`` skips whole batches; ``--global-batch-size`` refusals are one line naming both
numbers; a checkpoint from another global batch size is refused."""

from __future__ import annotations

import pytest
import torch

import train
from pipeline import LoaderConfig, build_loader, list_shards
from pipeline.plan import global_batch, rank_batch_size
from training.config import resolve
from training.elastic import check_global_batch, checkpoint_global_batch, global_batch_size, per_rank_batch_size, rank_draws
from train_helpers import QUIET, TINY_DATA, TINY_MODEL, build_motion_shards

GLOBAL = 6  # 12 train videos: 2 global batches per epoch


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")


def _global_batches(shards, world_size: int, *, backend: str = "reference", num_workers: int = 0, epochs=(0, 1)) -> list[dict]:
    """Every global batch of ``epochs`` read by ``world_size`` loaders (one per rank), put back in global order."""
    cfg = LoaderConfig(mode="pretrain", num_frames=4, speeds=(-2, -1, 1, 2), num_clips=3, resize=32, crop_size=20,
                       batch_size=rank_batch_size(GLOBAL, world_size), seed=3)
    loaders = [build_loader(list_shards(str(shards), split="train"), cfg, backend=backend, rank=r, world_size=world_size,
                            num_workers=num_workers, normalized=False) for r in range(world_size)]
    out = []
    try:
        assert len({len(loader) for loader in loaders}) == 1
        for epoch in epochs:
            per_rank = []
            for loader in loaders:
                loader.set_epoch(epoch)
                per_rank.append(list(loader))
            for step_batches in zip(*per_rank):
                samples = global_batch([rank_draws(b) for b in step_batches])
                clips = global_batch([list(b["clips"]) for b in step_batches])
                out.append({"keys": [k for k, _ in samples], "draws": [d for _, d in samples], "clips": torch.stack(clips)})
    finally:
        for loader in loaders:
            loader.close()
    return out


def test_the_same_global_batches_on_1_2_and_3_ranks(shards):
    one, two, three = (_global_batches(shards, w) for w in (1, 2, 3))
    assert len(one) == 4  # 2 epochs x 12 // 6
    for a, b, c in zip(one, two, three):
        assert a["keys"] == b["keys"] == c["keys"]
        assert a["draws"] == b["draws"] == c["draws"]
        assert torch.equal(a["clips"], b["clips"]) and torch.equal(a["clips"], c["clips"])
    # the check can fail: the epochs differ, every sample has 3 clips with a crop each, the epoch covers the split
    assert one[0]["keys"] != one[2]["keys"] and one[0]["draws"] != one[2]["draws"]
    assert all(len(d["starts"]) == len(d["speeds"]) == len(d["crops"]) == 3 for d in one[0]["draws"])
    assert len(set(one[0]["keys"] + one[1]["keys"])) == 12


def test_the_same_global_batches_with_workers_and_on_dali(shards):
    pytest.importorskip("nvidia.dali")
    one = _global_batches(shards, 1, epochs=(1,))
    workers = _global_batches(shards, 2, num_workers=2, epochs=(1,))
    dali = _global_batches(shards, 3, backend="dali", num_workers=1, epochs=(1,))
    for a, b, c in zip(one, workers, dali):
        assert a["keys"] == b["keys"] == c["keys"] and a["draws"] == b["draws"] == c["draws"]
        assert torch.equal(a["clips"], b["clips"])  # the same decoder: the same pixels


def test_start_batch_skips_whole_batches_of_the_epoch(shards):
    cfg = LoaderConfig(mode="finetune", num_frames=4, resize=32, crop_size=20, batch_size=2, seed=1)
    loader = build_loader(list_shards(str(shards), split="train"), cfg, backend="reference", rank=1, world_size=2, num_workers=0,
                          normalized=False)
    try:
        loader.set_epoch(2)
        full = list(loader)
        loader.set_epoch(2, start_batch=1)
        rest = list(loader)
        assert len(full) == len(loader) == 3 and len(rest) == 2
        for a, b in zip(full[1:], rest):
            assert a["key"] == b["key"] and torch.equal(a["frame_indices"], b["frame_indices"]) and torch.equal(a["crops"], b["crops"])
        with pytest.raises(ValueError, match=r"start_batch must be in \[0, 3\]"):
            loader.set_epoch(0, start_batch=4)
    finally:
        loader.close()


def test_global_batch_puts_rank_slices_back_in_order():
    assert global_batch([["a0", "a1"], ["b0", "b1"], ["c0", "c1"]]) == ["a0", "b0", "c0", "a1", "b1", "c1"]
    with pytest.raises(ValueError, match="different lengths"):
        global_batch([[1, 2], [3]])


def test_an_indivisible_global_batch_is_one_line_naming_both_numbers(shards):
    assert per_rank_batch_size(12, 8, 3) == 4 and per_rank_batch_size(0, 8, 3) == 8
    assert global_batch_size(0, 8, 3) == 24 and global_batch_size(12, 8, 3) == 12
    cfg = resolve("pretrain", {"data": {"data": str(shards), "global_batch_size": 7}})
    with pytest.raises(ValueError) as err:
        train.loader_config(cfg, "pretrain", training=True, world_size=2)
    assert str(err.value).startswith("--global-batch-size 7 is not a multiple of the world size 2") and "\n" not in str(err.value)
    assert train.loader_config(cfg, "pretrain", training=True, world_size=1).batch_size == 7
    assert train.loader_config(cfg, "eval", training=False, world_size=2).batch_size == cfg.data.eval_batch_size


def test_a_checkpoint_of_another_global_batch_is_refused(shards, tmp_path):
    state = {"global_batch_size": 8, "rng": [None, None], "config": {"data": {"batch_size": 99}}}
    check_global_batch(state, global_size=8, world_size=4)  # another world size, the same global batch: fine
    with pytest.raises(ValueError, match=r"global batch of 8 samples \(4 per rank x 2 ranks\), this run's is 6 .*--global-batch-size 8"):
        check_global_batch(state, global_size=6, world_size=1)
    assert checkpoint_global_batch({"rng": [None] * 3, "config": {"data": {"batch_size": 2}}}) == 6  # older checkpoints

    out = tmp_path / "run"
    common = ["--data", str(shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--out", str(out)]
    train.main(["pretrain", *common, "--max-steps", "2", "--stop-after", "1"])  # batch 2 on 1 rank: global batch 2
    with pytest.raises(ValueError, match=r"global batch of 2 samples .* this run's is 4 .*pass --global-batch-size 2"):
        train.main(["pretrain", "--out", str(out), "--resume", "--no-progress", "--global-batch-size", "4"])
    assert train.main(["pretrain", "--out", str(out), "--resume", "--no-progress", "--global-batch-size", "2"])["step"] == 2
