"""Resume on another world size (training/elastic.py), with torchrun and gloo on CPU.

A 2-rank run stopped mid-epoch (--stop-after), resumed on 1 rank and SIGKILLed, then resumed on 3 ranks, logs
the same global batches (OUT/samples.jsonl: keys, clip starts, speeds, crops) as an uninterrupted 1-rank run,
and the same losses within float-reduction tolerance.

The run is a linear probe (finetune --freeze-backbone) without dropout, because on CPU two things tie a loss
to the world size on purpose, not to a bug: BatchNorm in training mode normalizes with its own rank's batch
(SyncBatchNorm needs a GPU), and dropout masks come from each rank's RNG stream. A frozen backbone normalizes
with its stored statistics, so each sample's logits do not depend on which rank computes them, and the
step is a function of the global batch only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from training.logs import read_jsonl
from train_helpers import QUIET, REPO, TINY_DATA, TINY_MODEL, build_motion_shards, losses

STEPS = 10  # 12 train videos, global batch 6: 2 steps per epoch, 5 epochs
ARGS = [*TINY_DATA, *TINY_MODEL, *QUIET, "--arch", "r3d_18", "--init", "scratch", "--freeze-backbone", "--dropout", "0",
        "--global-batch-size", "6", "--max-steps", str(STEPS), "--ckpt-every", "1", "--warmup-steps", "2", "--lr", "0.5",
        "--log-samples", "--device", "cpu", "--no-tensorboard"]
#: The losses of one global batch computed on 1, 2 or 3 ranks differ only by the order of float32 sums (the
#: per-rank means and the all-reduce of the gradients vs one mean over the whole batch): a few ulps per
#: reduction (float32 eps = 1.2e-7), carried through 10 steps of SGD on a linear classifier. 1e-5 relative is
#: ~100 ulps; a different batch or a step applied twice changes the loss by far more (asserted below).
RTOL = 1e-5


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")


def _command(world_size: int, *args: str) -> list[str]:
    if world_size == 1:
        return [sys.executable, str(REPO / "train.py"), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world_size), str(REPO / "train.py"), *args]


def _run(world_size: int, *args: str) -> None:
    proc = subprocess.run(_command(world_size, *args), cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _run_and_kill(world_size: int, out, *args: str, after_steps: int) -> None:
    """Start the run and SIGKILL its whole process group once metrics.jsonl holds ``after_steps`` steps."""
    proc = subprocess.Popen(_command(world_size, *args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(read_jsonl(out / "metrics.jsonl")) >= after_steps:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


@pytest.mark.slow
def test_stopped_on_2_ranks_resumed_on_1_killed_resumed_on_3_sees_the_uninterrupted_batches(shards, tmp_path):
    reference = tmp_path / "reference"
    _run(1, "finetune", "--data", str(shards), *ARGS, "--out", str(reference))

    out = tmp_path / "elastic"
    _run(2, "finetune", "--data", str(shards), *ARGS, "--out", str(out), "--stop-after", "1")  # mid-epoch: step 1 of 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 1
    resume = ["finetune", "--out", str(out), "--resume", "--no-progress", "--stop-after", "0"]
    _run_and_kill(1, out, *resume, after_steps=4)
    killed_at = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 2 <= killed_at["step"] < STEPS and len(killed_at["rng"]) == 1  # written by the 1-rank run
    _run(3, *resume)

    final, expected = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (out, reference))
    assert final["step"] == expected["step"] == STEPS and len(final["rng"]) == 3 and final["global_batch_size"] == 6
    ours, theirs = read_jsonl(out / "samples.jsonl"), read_jsonl(reference / "samples.jsonl")
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))  # lines past each checkpoint replaced, not duplicated
    assert ours == theirs  # keys and clip draws of every global batch, in global batch order
    assert all(len(r["keys"]) == 6 and len(r["draws"]) == 6 and r["draws"][0]["crops"] for r in ours)

    ours, theirs = losses(out), losses(reference)
    assert sorted(ours) == list(range(1, STEPS + 1))
    for step in ours:
        assert ours[step] == pytest.approx(theirs[step], rel=RTOL), f"step {step} (killed at {killed_at['step']})"
    # the tolerance can fail: consecutive steps (other batches, updated weights) differ by far more than it
    assert all(abs(theirs[s + 1] - theirs[s]) > 100 * RTOL * abs(theirs[s]) for s in range(1, STEPS))
    for name, tensor in expected["model"].items():
        assert torch.allclose(final["model"][name], tensor, rtol=1e-4, atol=1e-6), name


def test_log_samples_records_the_planned_global_batches_and_continues_across_a_resume(shards, tmp_path):
    """Pretrain on one process: samples.jsonl lists, per step, the keys of the epoch's planned order (seed, epoch)
    and each clip's start, speed and crop; a run stopped after 3 steps and resumed writes the same file as an
    uninterrupted one (in-process: train.main)."""
    import train
    from pipeline import list_shards
    from pipeline.io.shard_reader import scan_shards
    from pipeline.plan import eligible_samples, rank_samples
    from training.config import parse_overrides, resolve

    args = ["pretrain", "--data", str(shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--global-batch-size", "4",
            "--max-steps", "5", "--seed", "7", "--log-samples"]
    train.main([*args, "--out", str(tmp_path / "full")])
    train.main([*args, "--out", str(tmp_path / "stopped"), "--stop-after", "3"])
    train.main(["pretrain", "--out", str(tmp_path / "stopped"), "--resume", "--no-progress", "--stop-after", "0"])
    full, stopped = read_jsonl(tmp_path / "full" / "samples.jsonl"), read_jsonl(tmp_path / "stopped" / "samples.jsonl")
    assert full == stopped and [r["step"] for r in full] == [1, 2, 3, 4, 5]

    lcfg = train.loader_config(resolve(*parse_overrides(args)), "pretrain", training=True)  # the run's own settings
    records, _ = scan_shards(list_shards(str(shards), split="train"))
    eligible, _ = eligible_samples(records, lcfg)
    planned = [r.key for epoch in (0, 1, 2) for r in rank_samples(eligible, lcfg, epoch=epoch, rank=0, world_size=1)[:12]]
    assert [k for r in full for k in r["keys"]] == planned[:20]  # 3 global batches of 4 per epoch
    speeds = {-2, -1, 1, 2}
    for draws in (d for r in full for d in r["draws"]):
        assert len(draws["starts"]) == len(draws["speeds"]) == len(draws["crops"]) == 3  # --num-clips 3
        assert len(set(draws["speeds"])) == 3 and set(draws["speeds"]) <= speeds
        assert all(0 <= top <= 32 - 28 and 0 <= left <= 32 - 28 and flip in (0, 1) for top, left, flip in draws["crops"])
        assert all(0 <= s <= 24 - 1 - abs(v) * 7 for s, v in zip(draws["starts"], draws["speeds"]))  # 24-frame videos, T=8


def test_auto_resume_starts_a_run_then_continues_it_with_the_same_command(shards, tmp_path):
    import train

    command = ["pretrain", "--data", str(shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET, "--out", str(tmp_path / "run"),
               "--max-steps", "4", "--stop-after", "2", "--auto-resume"]
    assert train.main(command)["step"] == 2  # no checkpoint yet: a new run
    assert train.main(command)["step"] == 4  # the same command again: resumed at step 2
    assert sorted(losses(tmp_path / "run")) == [1, 2, 3, 4]
    assert train.main(command)["step"] == 4  # a finished run: nothing left to do
