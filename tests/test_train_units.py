"""Unit tests of train.py's helpers (training/): configs and CLI, prefetcher, checkpoints, metrics, schedule."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random

import numpy as np
import pytest
import torch

from training import checkpoint
from training.config import SECTIONS, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, build_parser, field_docs, parse_overrides, resolve
from training.metrics import accuracy, clip_and_video_accuracy, group_by_video, retrieval_recall
from training.optim import build_optimizer, lr_factor
from training.prefetch import Prefetcher

# ---------------------------------------------------------------- config and CLI


def test_every_field_has_a_docstring_and_a_flag_with_that_help(capsys):
    for section in SECTIONS.values():
        docs = field_docs(section)
        assert set(docs) == {f.name for f in dataclasses.fields(section)}, section
        assert all(len(d) > 10 for d in docs.values())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for section in SECTIONS.values():
        for name, doc in field_docs(section).items():
            assert "--" + name.replace("_", "-") in help_text
            assert doc[:40] in help_text, name


def test_cli_overrides_only_given_options_and_types_them():
    mode, over = parse_overrides(["finetune", "--lr", "0.2", "--speeds=-2,-1,1,2", "--no-augment", "--arch", "c3d", "--max-steps", "7"])
    assert mode == "finetune"
    assert over == {"data": {"speeds": (-2, -1, 1, 2), "augment": False}, "model": {"arch": "c3d"}, "optim": {"lr": 0.2, "max_steps": 7}, "run": {}}
    with pytest.raises(ValueError, match="--data"):
        resolve(mode, over)
    cfg = resolve(mode, over, base={"data": {"data": "shards"}, "model": {"arch": "r3d_18", "base_width": 16}, "optim": {"lr": 0.9}})
    assert cfg.model.arch == "c3d" and cfg.model.base_width == 16  # CLI beats base, base beats defaults
    assert cfg.optim.lr == 0.2 and cfg.optim.max_steps == 7 and cfg.data.speeds == (-2, -1, 1, 2)
    assert cfg.optim.momentum == OptimConfig().momentum


@pytest.mark.parametrize(
    "section, bad",
    [
        (DataConfig, {"speeds": (1, 0, 2)}),
        (DataConfig, {"speeds": (1, 1, 2)}),
        (DataConfig, {"num_clips": 5, "speeds": (1, 2, 3, 4)}),
        (DataConfig, {"crop_size": 130, "resize": 128}),
        (DataConfig, {"backend": "gpu"}),
        (ModelConfig, {"arch": "resnet50"}),
        (ModelConfig, {"head": "order"}),
        (ModelConfig, {"dropout": 1.0}),
        (OptimConfig, {"optimizer": "adam"}),
        (OptimConfig, {"lr": 0.0}),
        (OptimConfig, {"min_lr_ratio": 2.0}),
        (RunConfig, {"device": "tpu"}),
        (RunConfig, {"log_every": 0}),
    ],
)
def test_invalid_values_are_refused_on_construction(section, bad):
    with pytest.raises(ValueError):
        section(**bad)


def test_config_round_trips_through_json_and_weights_only_load(tmp_path):
    cfg = resolve("pretrain", {"data": {"data": "shards", "speeds": (-4, 4), "num_clips": 2}, "model": {"tgn_groups": (2, 2, 1, 1, 1)}, "run": {"out": "x"}})
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg
    torch.save({"config": d}, tmp_path / "c.pt")
    assert TrainConfig.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["config"]) == cfg


# ---------------------------------------------------------------- prefetcher


def _fake_batches(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"clips": torch.randn(2, 3, 3, 4, 8, 8, generator=g), "label": torch.tensor([i, -1]), "key": [f"k{i}a", f"k{i}b"]} for i in range(n)]


def test_prefetcher_cpu_path_delivers_every_batch_in_order_and_unchanged():
    batches = _fake_batches(5)
    out = list(Prefetcher(batches, torch.device("cpu")))
    assert len(out) == 5
    for got, want in zip(out, batches):
        assert got.keys() == want.keys()
        assert torch.equal(got["clips"], want["clips"]) and got["clips"].dtype == torch.float32
        assert torch.equal(got["label"], want["label"]) and got["key"] == want["key"]
    assert list(Prefetcher([], torch.device("cpu"))) == []


def test_prefetcher_measures_the_wait_for_slow_batches():
    import time

    def slow():
        for b in _fake_batches(3):
            time.sleep(0.05)
            yield b

    pf = Prefetcher(slow(), torch.device("cpu"))
    waits = []
    for _ in pf:
        waits.append(pf.last_wait_s)
    assert len(waits) == 3 and all(w >= 0.04 for w in waits)


def test_prefetcher_keeps_loader_randomness_out_of_the_training_rng():
    """A loader that draws from the global RNG (as torch's DataLoader does for worker seeds) must not shift
    the training stream; otherwise a run resumed mid-epoch would see different dropout masks."""

    def greedy():
        for b in _fake_batches(3):
            torch.rand(10)
            yield b

    torch.manual_seed(123)
    expected = [torch.rand(1).item() for _ in range(3)]
    torch.manual_seed(123)
    got = [torch.rand(1).item() for _ in Prefetcher(greedy(), torch.device("cpu"))]
    assert got == expected


# ---------------------------------------------------------------- checkpoints


def test_rng_state_round_trips_every_stream(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), np.random.randn(), torch.rand(2)
    state = rng_saved = checkpoint.rng_state()
    checkpoint.save_atomic({"rng": rng_saved}, tmp_path / "r.pt")
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = checkpoint.load(tmp_path / "r.pt")["rng"]
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expected


def test_save_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    model = torch.nn.Linear(3, 2)
    for step in (1, 2):
        checkpoint.save_atomic({"model": model.state_dict(), "step": step, "config": {"a": [1, 2], "b": "x"}}, path)
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]
    loaded = checkpoint.load(path)
    assert loaded["step"] == 2 and loaded["config"] == {"a": [1, 2], "b": "x"}
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    checkpoint.save_atomic({"bad": object.__new__(DataConfig)}, tmp_path / "x.pt")
    with pytest.raises(Exception):
        checkpoint.load(tmp_path / "x.pt")


def test_unwrap_strips_compile_wrapper():
    model = torch.nn.Linear(2, 2)

    class Compiled(torch.nn.Module):  # what torch.compile returns keeps the module as _orig_mod
        def __init__(self):
            super().__init__()
            self._orig_mod = model

    assert checkpoint.unwrap(Compiled()) is model
    assert list(checkpoint.unwrap(Compiled()).state_dict()) == ["weight", "bias"]


# ---------------------------------------------------------------- metrics


def test_accuracy_ignores_unlabelled():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 0, -1])) == 0.5
    assert math.isnan(accuracy(logits, torch.tensor([-1, -1, -1])))


def test_video_accuracy_averages_clip_logits_over_all_segments_of_a_video():
    # video "a" in two segments (2 clips each): clips vote 1,1,1 weakly and 0 strongly -> mean says 0.
    logits = torch.tensor([
        [[0.0, 0.1], [0.0, 0.1]],  # a, segment 1
        [[0.0, 0.1], [9.0, 0.0]],  # a, segment 2
        [[0.0, 2.0], [1.0, 0.0]],  # b
    ])
    labels = torch.tensor([0, 0, 1])
    res = clip_and_video_accuracy(["a", "a", "b"], logits, labels)
    assert res["clip_acc"] == pytest.approx(2 / 6)
    assert res["video_acc"] == 1.0 and res["num_videos"] == 2 and res["num_clips"] == 6
    ids, means, lab = group_by_video(["b", "a", "a"], logits, torch.tensor([1, 0, 0]))
    assert ids == ["a", "b"] and lab.tolist() == [0, 1]
    assert torch.allclose(means[0], logits[1:].flatten(0, 1).mean(0))


def test_retrieval_recall_counts_a_hit_when_any_of_the_top_k_matches():
    gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    g_labels = torch.tensor([0, 1, 2, 3])
    query = torch.tensor([[1.0, 0.05], [10.0, 0.0], [0.0, -1.0]])  # cosine: scale does not matter
    q_labels = torch.tensor([1, 0, 3])
    r = retrieval_recall(query, q_labels, gallery, g_labels, ks=(1, 2, 3, 50))
    # query 0: ranking 0,1,... -> label 1 first at rank 2; query 1: rank 1; query 2 (pointing down):
    # sims 0, -0.11, -1, 0 -> label 3 (sim 0, tied with item 0) at rank 1 or 2.
    assert r["R@1"] in (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert r["R@2"] == pytest.approx(1.0)
    assert r["R@50"] == 1.0  # k beyond the gallery counts as the whole gallery
    r = retrieval_recall(query[:2], torch.tensor([7, 7]), gallery, g_labels)
    assert all(v == 0.0 for v in r.values())


# ---------------------------------------------------------------- optimizer and schedule


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    f = [lr_factor(s, total_steps=100, warmup_steps=10, min_lr_ratio=0.1) for s in range(100)]
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_factor(100, total_steps=100, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(0, total_steps=20, warmup_steps=100, min_lr_ratio=0.0) == pytest.approx(0.5)  # warmup clipped to 2 steps


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_decays_weights_but_not_norms_and_biases(name, cls):
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4))
    opt = build_optimizer(model, OptimConfig(optimizer=name, weight_decay=0.01))
    assert isinstance(opt, cls)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [model[0].weight.shape]
    assert len(no_decay["params"]) == 3  # conv bias, bn weight, bn bias
