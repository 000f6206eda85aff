"""The evaluation protocol (training/evaluate.py) as train.py applies it: eval and validation clips are the centre
crop of the short-side resize, never the whole frame squashed to a square, and eval.json records how clips
were cut along with top-5, per-class accuracy, the confusion matrix and the flags on uninformative k."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from pipeline import build_loader, list_shards
from pipeline.views import View, draw_views
from pipeline_helpers import build_numbered_shards
from synthetic.videos import numbered_frame
from train_helpers import QUIET, TINY_DATA, TINY_MODEL, build_motion_shards
from training.config import resolve


def _config(data: str, **clips):
    return resolve("eval", {"data": {"data": data, **clips}})


@pytest.mark.parametrize("mode,training,augment", [("eval", False, True), ("finetune", False, True), ("finetune", True, False)])
def test_every_unaugmented_view_train_py_asks_for_is_the_centre_crop(mode, training, augment):
    cfg = resolve("finetune", {"data": {"data": "x", "augment": augment}})
    lcfg = train.loader_config(cfg, mode, training=training)
    assert not lcfg.augment and lcfg.eval_view == "center"
    # a 4:3 video of 128x171 (the peers' size): short side 128 kept, the centre 112 square; squashed would be (112, 112) at 0, 0
    assert draw_views(np.random.default_rng(0), 3, 128, 171, lcfg) == [View((128, 171), 8, 29, 112, False)] * 3


def test_eval_clips_hold_the_centre_of_a_wide_frame_not_the_squashed_frame(tmp_path):
    """Frame-numbered 176x128 videos draw binary bars across the whole width: the centre crop loses the outer bars
    (the lowest bits sit at the right edge), a squashed frame keeps all of them at other places."""
    out = build_numbered_shards(tmp_path, codec="h264", videos={"wide": ("walk", 40)})
    cfg = _config(str(out), num_frames=8, num_eval_clips=2, resize=128, crop_size=112)
    loader = build_loader(list_shards(out, split="train"), train.loader_config(cfg, "eval", training=False), backend="reference",
                          num_workers=0, normalized=False)
    (batch,) = list(loader)
    clips = batch["clips"][0].float()  # (K, T, 112, 112, 3) uint8 -> float
    frames = batch["frame_indices"][0].flatten().tolist()
    assert clips.shape == (2, 8, 112, 112, 3) and frames[:3] == [0, 1, 2] and frames[-1] == 39
    drawn = torch.stack([torch.from_numpy(numbered_frame(f, width=176, height=128)).float() for f in frames])  # (16, 128, 176, 3)
    centre = drawn[:, 8:120, 32:144]  # 128x176 is already short side 128: crop rows 8.., columns 32..
    squashed = F.interpolate(drawn.permute(0, 3, 1, 2), size=(112, 112), mode="bilinear", antialias=True).permute(0, 2, 3, 1)
    decoded = clips.flatten(0, 1)
    error_centre = (decoded - centre).abs().mean().item()
    error_squashed = (decoded - squashed).abs().mean().item()
    assert error_centre < 4, error_centre  # codec noise on bar edges only
    assert error_squashed > 25, error_squashed  # what a squashed view would be measured against


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return build_motion_shards(tmp_path_factory.getbasetemp() / "train_motion")


def test_eval_json_records_the_protocol_top5_per_class_accuracy_and_the_confusion_matrix(shards, tmp_path):
    common = ["--data", str(shards), *TINY_DATA, *QUIET, "--no-tensorboard"]
    train.main(["finetune", *common, *TINY_MODEL, "--arch", "c3d", "--init", "scratch", "--max-steps", "2", "--val-fraction", "0",
                "--out", str(tmp_path / "ft")])
    res = train.main(["eval", *common, "--init", str(tmp_path / "ft" / "checkpoint.pt")])
    assert json.loads((tmp_path / "ft" / "eval.json").read_text()) == json.loads(json.dumps(res))
    p = res["protocol"]
    assert (p["eval_view"], p["resize"], p["crop_size"], p["clips_per_video"], p["frames_per_clip"]) == ("center", 32, 28, 2, 8)
    assert p["view"].startswith("center: short side resized to 32, centre 28x28 crop")
    assert 0 <= res["video_acc"] <= res["video_top5"] <= 1 and 0 <= res["clip_acc"] <= res["clip_top5"] <= 1
    assert res["k_at_least_classes"] == []  # 6 classes
    classes = sorted(res["per_class_acc"])
    assert len(classes) == 6 and all(a in (0.0, 1.0) for a in res["per_class_acc"].values())  # one test video per class
    assert res["mean_class_acc"] == pytest.approx(sum(res["per_class_acc"].values()) / 6)
    confusion = json.loads((tmp_path / "ft" / "confusion.json").read_text())
    assert confusion["classes"] == classes and (confusion["rows"], confusion["columns"]) == ("true class", "predicted class")
    m = np.array(confusion["matrix"])
    assert m.shape == (6, 6) and m.sum() == 6 and (m.sum(1) == 1).all()  # each test video once, in its true class's row
    assert np.trace(m) / 6 == pytest.approx(res["video_acc"])
    assert [res["per_class_acc"][c] for c in classes] == [float(m[i, i]) for i in range(6)]
    assert res["confusion"] == {"json": "confusion.json", "png": "confusion.png"}
    assert (tmp_path / "ft" / "confusion.png").stat().st_size > 1000
    # 12 gallery videos: R@20 and R@50 count the whole gallery
    assert res["retrieval"]["gallery"] == 12 and res["retrieval"]["k_at_least_gallery"] == ["R@20", "R@50"]


def test_eval_refuses_a_checkpoint_fine_tuned_on_other_classes(shards, tmp_path):
    common = ["--data", str(shards), *TINY_DATA, *QUIET, "--no-tensorboard"]
    train.main(["finetune", *common, *TINY_MODEL, "--arch", "c3d", "--init", "scratch", "--max-steps", "1", "--val-fraction", "0",
                "--out", str(tmp_path / "ft")])
    state = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)
    state["classes"] = [f"other_{c}" for c in state["classes"]]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"--init .*other\.pt classifies 6 classes, --data .* has 6 other ones"):
        train.main(["eval", *common, "--init", str(tmp_path / "other.pt")])
