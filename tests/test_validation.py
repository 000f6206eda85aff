"""training/validation.py and its use by ``train.py finetune``: the held-out videos (seeded, by video, disjoint from
what is trained on, never from the test split), when validation runs, and which checkpoint becomes best.pt."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from pipeline.io.shard_reader import SampleRecord
from train_helpers import QUIET, REPO, TINY_DATA, TINY_MODEL, build_motion_shards
from training.validation import BestSoFar, Holdout, is_due, validation_videos


def _record(key: str, video_id: str | None, label: int | None) -> SampleRecord:
    return SampleRecord("shard.tar", key, members={}, meta={"frames": 100, "label": label, "video_id": video_id})


def _records() -> list[SampleRecord]:
    """40 labelled videos, every fourth in three segments, and 5 unlabelled videos."""
    records = []
    for v in range(40):
        segments = 3 if v % 4 == 0 else 1
        records += [_record(f"v{v:02d}_{s}", f"v{v:02d}", v % 5) for s in range(segments)]
    return records + [_record(f"u{u}", None, None) for u in range(5)]


def test_held_out_videos_are_a_seeded_fraction_of_the_labelled_videos_whatever_the_record_order():
    records = _records()
    held = validation_videos(records, 0.1, seed=0)
    assert len(held) == 4 and held <= {f"v{v:02d}" for v in range(40)}  # ceil(0.1 * 40); never an unlabelled video
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert validation_videos(shuffled, 0.1, seed=0) == held  # the same on every rank, whatever the shard order
    assert validation_videos(records, 0.1, seed=1) != held
    assert len(validation_videos(records, 0.01, seed=0)) == 1  # rounded up: a positive fraction holds out a video
    assert validation_videos(records, 0.0, seed=0) == frozenset()


def test_the_two_sides_are_disjoint_cover_the_split_and_keep_a_videos_segments_together():
    records = _records()
    holdout = Holdout(0.25, seed=3)
    trained, validated = holdout.training(records), holdout.validation(records)
    assert {r.key for r in trained}.isdisjoint({r.key for r in validated})
    assert {r.video_id for r in trained}.isdisjoint({r.video_id for r in validated})
    assert sorted(r.key for r in trained + validated) == sorted(r.key for r in records)
    segmented = [r.video_id for r in validated if r.video_id in {f"v{v:02d}" for v in range(0, 40, 4)}]
    assert all(segmented.count(v) == 3 for v in segmented)  # all three segments of a held-out video
    assert all(r.label >= 0 for r in validated) and sum(r.label < 0 for r in trained) == 5


def test_a_fraction_that_leaves_nothing_to_train_or_to_validate_is_refused():
    records = [_record(f"k{i}", f"v{i}", 0) for i in range(3)]
    with pytest.raises(ValueError, match=r"--val-fraction 0.7 holds out 3 of the 3 labelled videos .* --val-fraction 0"):
        validation_videos(records, 0.7, seed=0)
    with pytest.raises(ValueError, match="no labelled video to validate on"):
        validation_videos([_record("u", None, None)], 0.1, seed=0)


def test_the_best_is_the_first_strict_maximum():
    best = BestSoFar()
    offers = [(0.2, 0), (0.5, 1), (0.5, 2), (0.4, 3), (float("nan"), 4)]
    kept = [best.offer(value, epoch=epoch, step=10 * (epoch + 1)) for value, epoch in offers]
    assert kept == [True, True, False, False, False]
    assert (best.value, best.epoch, best.step) == (0.5, 1, 20)
    assert BestSoFar.from_dict(best.to_dict()) == best and BestSoFar.from_dict(None) == BestSoFar()
    assert BestSoFar.from_dict(best.to_dict()).offer(0.5, epoch=9, step=99) is False  # a resumed run still keeps the earlier tie


def test_validation_is_due_every_n_epochs_and_after_the_last_step():
    due = [s for s in range(1, 23) if is_due(s, steps_per_epoch=5, total_steps=22, every_epochs=2)]
    assert due == [10, 20, 22]
    assert [s for s in range(1, 23) if is_due(s, steps_per_epoch=5, total_steps=22, every_epochs=0)] == [22]
    assert [s for s in range(1, 11) if is_due(s, steps_per_epoch=5, total_steps=10, every_epochs=1)] == [5, 10]


# ---------------------------------------------------------------- train.py finetune with validation


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")


@pytest.fixture
def fixed_validation(monkeypatch):
    """train.validate replaced by fixed video accuracies, one per call, recording the weights it was shown."""
    values = [0.2, 0.5, 0.5, 0.4]
    seen: list[dict] = []

    def fake(model, loader, **_):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        value = values[len(seen) - 1]
        return {"video_acc": value, "clip_acc": value, "loss": 1.0 - value, "num_videos": 2, "num_clips": 4}

    monkeypatch.setattr(train, "validate", fake)
    return seen


def _finetune_args(shards, out) -> list[str]:
    return ["finetune", "--data", str(shards), "--out", str(out), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET,
            "--epochs", "4", "--val-every", "1"]


def test_finetune_keeps_the_checkpoint_of_the_best_validation_and_records_its_epoch(shards, tmp_path, fixed_validation):
    out = tmp_path / "ft"
    summary = train.main(_finetune_args(shards, out))
    steps_per_epoch = summary["total_steps"] // 4  # 12 train videos - 2 held out = 10, batch 2
    assert steps_per_epoch == 5 and len(fixed_validation) == 4  # after every epoch (the last one is the run's end)
    v = summary["validation"]
    assert (v["metric"], v["best"], v["best_epoch"], v["best_step"]) == ("video_acc", 0.5, 1, 10)  # the first 0.5, not the tie
    assert v["videos"] == 2 and v["protocol"]["eval_view"] == "center"
    best = torch.load(out / "best.pt", weights_only=True)
    assert (best["step"], best["epoch"], best["mode"]) == (10, 1, "finetune")
    assert best["validation"]["video_acc"] == 0.5 and len(best["classes"]) == 6
    for k, value in best["model"].items():  # the weights validated second, not those of the last epoch
        assert torch.equal(value, fixed_validation[1][k]), k
    last = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert not all(torch.equal(best["model"][k], last[k]) for k in last)
    records = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"], r["video_acc"], r["best"]) for r in records] == [
        (5, 0, 0.2, True), (10, 1, 0.5, True), (15, 2, 0.5, False), (20, 3, 0.4, False)]
    assert json.loads((out / "summary.json").read_text())["validation"] == v
    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Scalars("val/video_acc")  # TensorBoard, beside the training curves
    assert [e.step for e in scalars] == [5, 10, 15, 20] and [e.value for e in scalars] == pytest.approx([0.2, 0.5, 0.5, 0.4])

    # eval of best.pt says which validation chose it
    res = train.main(["eval", "--data", str(shards), "--init", str(out / "best.pt"), *TINY_DATA, *QUIET, "--no-tensorboard"])
    assert res["chosen_by"]["step"] == 10 and res["chosen_by"]["video_acc"] == 0.5


def test_a_resumed_run_still_compares_with_the_best_before_the_kill(shards, tmp_path, fixed_validation):
    out = tmp_path / "ft"
    train.main([*_finetune_args(shards, out), "--stop-after", "12"])  # validated at steps 5 and 10, stopped at 12
    assert len(fixed_validation) == 2
    summary = train.main(["finetune", "--out", str(out), "--resume", "--no-progress"])
    assert len(fixed_validation) == 4
    v = summary["validation"]
    assert (v["best"], v["best_epoch"], v["best_step"]) == (0.5, 1, 10)  # the tie at step 15 did not replace it
    assert torch.load(out / "best.pt", weights_only=True)["step"] == 10
    records = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]


def test_validation_reads_only_held_out_train_videos_never_the_test_split(shards, tmp_path, monkeypatch):
    opened = []
    open_loader = train.open_loader

    def spy(cfg, info, split, lcfg, select=None):
        loader = open_loader(cfg, info, split, lcfg, select)
        opened.append((split, lcfg.mode, lcfg.eval_view, loader))
        return loader

    monkeypatch.setattr(train, "open_loader", spy)
    summary = train.main([*_finetune_args(shards, tmp_path / "ft"), "--val-fraction", "0.25", "--max-steps", "3"])
    assert [(split, mode, view) for split, mode, view, _ in opened] == [("train", "finetune", "center"), ("train", "eval", "center")]
    trained, validated = ({r.video_id for r in loader.eligible} for *_, loader in opened)
    assert len(validated) == 3 and len(trained) == 9 and trained.isdisjoint(validated)  # ceil(0.25 * 12) held out
    assert summary["validation"]["videos"] == 3 and summary["validation"]["best_step"] == 3  # validated once, at the end


def test_val_fraction_zero_trains_on_every_video_and_writes_no_best_checkpoint(shards, tmp_path):
    out = tmp_path / "ft"
    summary = train.main([*_finetune_args(shards, out), "--val-fraction", "0", "--max-steps", "2"])
    assert "validation" not in summary and not (out / "best.pt").exists() and not (out / "validation.jsonl").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["steps_per_epoch"] == 6  # all 12 train videos, batch 2


def test_validation_under_two_process_ddp_scores_every_held_out_video_once(shards, tmp_path):
    """gloo on CPU under torchrun: each rank scores its share of the held-out videos and both agree on best.pt."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(REPO / "train.py"),
                           *_finetune_args(shards, out), "--epochs", "2", "--val-fraction", "0.25"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]  # rank 0 only
    # 9 train videos / 2 ranks / batch 2 = 2 steps per epoch; 3 held-out videos, 2 clips each, gathered from both ranks
    assert [(r["step"], r["num_videos"], r["num_clips"]) for r in records] == [(2, 3, 6), (4, 3, 6)]
    summary = json.loads((out / "summary.json").read_text())["validation"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["step"] == summary["best_step"] == next(r["step"] for r in records if r["best"])
