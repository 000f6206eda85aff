"""End-to-end tests of train.py on tiny motion-class shards: every backbone through pretrain -> finetune -> eval,
exact kill-and-resume, and a 2-process gloo DDP run under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from train_helpers import QUIET, REPO, TINY_DATA, TINY_MODEL, losses, run_train


@pytest.mark.parametrize("arch", ["c3d", "r3d_18", "r2plus1d_18"])
def test_pretrain_finetune_eval_for_each_backbone(arch, motion_shards, tmp_path):
    common = ["--data", str(motion_shards), "--arch", arch, *TINY_DATA, *TINY_MODEL, *QUIET]
    pre = train.main(["pretrain", *common, "--out", str(tmp_path / "pre"), "--max-steps", "3", "--head", "both"])
    assert pre["step"] == 3
    records = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["loss"] > 0 and 0 <= r["order_acc"] <= 1 and 0 <= r["speed_acc"] <= 1 and 0 <= r["data_wait_pct"] <= 100 for r in records)
    ckpt = torch.load(tmp_path / "pre" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "step", "epoch", "config", "rng"} <= set(ckpt)
    assert ckpt["step"] == 3 and ckpt["config"]["model"]["arch"] == arch and ckpt["config"]["mode"] == "pretrain"
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    assert json.loads((tmp_path / "pre" / "config.json").read_text()) == ckpt["config"]
    assert (tmp_path / "pre" / "curves.png").stat().st_size > 1000

    # Fine-tuning with a vanishing learning rate: the backbone must still be the pretrained one (init works);
    # the architecture comes from the checkpoint's config, not from the command line.
    ft_args = ["--data", str(motion_shards), *TINY_DATA, *QUIET, "--max-steps", "2", "--weight-decay", "0"]
    ft = train.main(["finetune", *ft_args, "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "pre" / "checkpoint.pt"), "--lr", "1e-12"])
    scratch = train.main(["finetune", *ft_args, "--out", str(tmp_path / "scratch"), "--init", "scratch", "--arch", arch, *TINY_MODEL])
    assert ft["step"] == scratch["step"] == 2
    ft_ckpt = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)
    scratch_ckpt = torch.load(tmp_path / "scratch" / "checkpoint.pt", weights_only=True)
    assert ft_ckpt["config"]["model"]["arch"] == arch and ft_ckpt["classes"] == sorted(ft_ckpt["classes"]) and len(ft_ckpt["classes"]) == 6
    weights = [k for k, v in ckpt["model"].items() if k.startswith("backbone.") and v.dim() == 5]
    assert weights
    for k in weights:
        assert torch.allclose(ft_ckpt["model"][k], ckpt["model"][k], atol=1e-7), k
    assert not all(torch.allclose(scratch_ckpt["model"][k], ckpt["model"][k]) for k in weights)

    res = train.main(["eval", "--data", str(motion_shards), "--init", str(tmp_path / "ft" / "checkpoint.pt"), *TINY_DATA, *QUIET])
    stored = json.loads((tmp_path / "ft" / "eval.json").read_text())
    assert stored == json.loads(json.dumps(res))
    assert res["num_videos"] == 6 and res["num_clips"] == 12  # every test video once, 2 evenly spaced clips each
    assert 0 <= res["clip_acc"] <= 1 and 0 <= res["video_acc"] <= 1 and res["chance"] == pytest.approx(1 / 6)
    r = res["retrieval"]
    assert r["queries"] == 6 and r["gallery"] == 12
    assert 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= r["R@20"] <= r["R@50"] == 1.0

    pre_eval = train.main(["eval", "--data", str(motion_shards), "--init", str(tmp_path / "pre" / "checkpoint.pt"), *TINY_DATA, *QUIET])
    assert pre_eval["kind"] == "pretrain" and "clip_acc" not in pre_eval
    assert pre_eval["pretext_order_chance"] == pytest.approx(1 / 6) and pre_eval["pretext_speed_chance"] == pytest.approx(1 / 4)
    assert 0 <= pre_eval["pretext_order_acc"] <= 1 and 0 <= pre_eval["pretext_speed_acc"] <= 1


def test_kill_and_resume_reproduces_the_uninterrupted_loss_curve(motion_shards, tmp_path):
    """SIGKILL a run mid-epoch, resume it from its last checkpoint, and compare every step's loss with an
    uninterrupted run of the same config. One loader worker: its per-epoch seed must not perturb dropout."""
    args = ["pretrain", "--data", str(motion_shards), "--arch", "c3d", *TINY_DATA, *TINY_MODEL, *QUIET,
            "--num-workers", "1", "--max-steps", "12", "--ckpt-every", "2", "--warmup-steps", "4"]
    run_train(*args, "--out", str(tmp_path / "full"))
    full = losses(tmp_path / "full")
    assert sorted(full) == list(range(1, 13))

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args, "--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = killed / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 8:  # inside the second epoch (6 steps each)
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: the loader's worker goes too
    finally:
        proc.wait()
    stopped_at = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 2 <= stopped_at < 12 and stopped_at % 2 == 0

    run_train("pretrain", "--out", str(killed), "--resume", "--no-progress")
    resumed = losses(killed)
    assert sorted(resumed) == list(range(1, 13))  # the steps logged after the last checkpoint were redone, not duplicated
    for step in range(1, 13):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), f"step {step} (resumed from {stopped_at})"
    final_full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    final_resumed = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert final_resumed["step"] == 12
    for k, v in final_full["model"].items():
        assert torch.allclose(final_resumed["model"][k].float(), v.float(), rtol=1e-4, atol=1e-6), k


_RANK_WRAPPER = """
import os, sys, torch
sys.path.insert(0, {repo!r})
import train
made = []
build = train.build_model
train.build_model = lambda *a, **k: made.append(build(*a, **k)) or made[-1]
summary = train.main(sys.argv[1:])
torch.save({{k: v.detach().clone() for k, v in made[0].state_dict().items()}}, os.path.join({dump!r}, "rank%s.pt" % os.environ["RANK"]))
"""


def test_torchrun_two_process_gloo_ddp(motion_shards, tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    wrapper = tmp_path / "rank_wrapper.py"
    wrapper.write_text(_RANK_WRAPPER.format(repo=str(REPO), dump=str(dump)))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(wrapper),
         "pretrain", "--data", str(motion_shards), "--arch", "r3d_18", *TINY_DATA, *TINY_MODEL, *QUIET, "--epochs", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]  # both ranks finished
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:  # parameters: DDP's averaged gradients; buffers: rank 0's, broadcast at the end
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["checkpoint.pt"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    # 12 train videos / 2 ranks / batch 2 = 3 steps per epoch on every rank, 2 epochs.
    assert ckpt["step"] == 6 and ckpt["steps_per_epoch"] == 3 and len(ckpt["rng"]) == 2
    assert sorted(losses(out)) == list(range(1, 7))  # only rank 0 logs
    for k, v in ckpt["model"].items():
        assert torch.equal(v, ranks[0][k]), k
