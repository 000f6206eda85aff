"""The evaluation protocol and the pass that applies it, shared by ``train.py eval`` and validation during fine-tuning.

The protocol is the peers' (VCOP, PRP, Pace, RSPNet): every frame's short side is resized to ``--resize``
(128: 128x171 for 4:3 video), the centre ``--crop-size`` square (112x112) is kept, nothing is flipped, and a
video is scored by the mean over ``--num-eval-clips`` evenly spaced clips (all segments of a video together).
Training sees the same resize with a random crop, so train and test views differ only by the crop's
position. The loader's other view (``eval_view="full"``, the whole frame squashed to a square) is not used
by train.py: it changes the aspect ratio the network was trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline import ClipConfig
from training import distributed
from training.prefetch import Prefetcher

#: The loader's ``eval_view`` for every loader train.py builds (``LoaderConfig.eval_view``; used whenever
#: ``augment`` is off: eval, validation, and training with ``--no-augment``).
EVAL_VIEW = "center"


def protocol(clips: ClipConfig) -> dict:
    """How eval cut its clips, as recorded in eval.json (and in summary.json for validation)."""
    return {"view": f"{EVAL_VIEW}: short side resized to {clips.resize}, centre {clips.crop_size}x{clips.crop_size} crop, no flip",
            "eval_view": EVAL_VIEW, "resize": clips.resize, "crop_size": clips.crop_size,
            "clips_per_video": clips.num_eval_clips, "frames_per_clip": clips.num_frames,
            "video_score": "mean of the clips' logits (retrieval: of their backbone features)"}


@torch.no_grad()
def gather_outputs(loader, forward: Callable[[dict], dict[str, torch.Tensor]], *, device: torch.device, amp: bool,
                   info: distributed.DistInfo, channels_last: bool = False) -> dict:
    """Every batch of ``loader`` (this rank's share of a split, each video once) through ``forward(batch)``, which
    returns ``{name: tensor with the batch as first dimension}``. Returns the outputs of every rank, concatenated
    on the CPU (floats as float32), plus ``video_id`` (list) and ``label`` (tensor). Every rank must call it.
    ``amp``: bf16 autocast on a GPU; ``channels_last``: the clips' layout on a GPU (as the model's, see Prefetcher)."""
    parts: dict[str, list] = {"video_id": [], "label": []}
    for batch in Prefetcher(loader, device, channels_last=channels_last):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            for key, value in forward(batch).items():
                parts.setdefault(key, []).append((value.float() if value.is_floating_point() else value).cpu())
        parts["video_id"] += batch["video_id"]
        parts["label"].append(batch["label"].cpu())
    gathered = distributed.all_gather_objects(parts, info)
    # every rank's keys: a rank with no video of the split (more ranks than held-out videos) has only the two above
    keys = dict.fromkeys(k for g in gathered for k in g)
    return {k: (sum((g[k] for g in gathered), []) if k == "video_id" else torch.cat([t for g in gathered for t in g.get(k, [])]))
            for k in keys}


class EvalMode:
    """``with EvalMode(model):`` every module in eval mode, and each back in the mode it had (a frozen backbone
    of a linear probe stays in eval mode after validation)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._modes: list[tuple[torch.nn.Module, bool]] = []

    def __enter__(self) -> torch.nn.Module:
        self._modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for module, training in self._modes:
            module.training = training
