"""The paper's protocols as named presets: ``train.py {pretrain,finetune,eval} --preset NAME``.

A preset is a set of option values for one mode, applied over the defaults and under everything else:

    defaults  <-  preset  <-  the --init checkpoint's model (and, for eval, its clip settings)  <-  command line

so ``--preset paper --arch c3d --lr 0.02`` is the paper's recipe with two changes, and fine-tuning keeps the
architecture of the checkpoint it starts from. ``docs/reproduce.md`` lists every value with where it comes
from (the paper, its peers VCOP and PRP, or this project's choice where neither says) and the reference
numbers to compare with.

``python -m training.presets`` prints the presets and the wall-time estimate of each reproduction step
(see :func:`wall_time_hours`); ``--clips-per-s`` replaces the estimated GPU rate with a measured one.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

#: Clip settings shared by every stage of the paper's protocol: 16-frame clips, frames resized so the short
#: side is 128 (the peers' 128x171), random 112x112 crops for training and the centre crop for evaluation.
_CLIPS = {"num_frames": 16, "resize": 128, "crop_size": 112}
#: Validation while fine-tuning (this project's choice): a tenth of the train split's videos held out and scored
#: every 5 epochs (10 clips each, like the test videos), the best epoch kept as best.pt.
_VALIDATION = {"data": {"val_fraction": 0.1}, "run": {"val_every": 5}}


@dataclass(frozen=True)
class Preset:
    """Option values for one mode of ``train.py``, by config section (``data``, ``model``, ``optim``, ``run``)."""

    name: str
    """What goes after ``--preset``."""
    mode: str
    """The ``train.py`` mode it is for: pretrain, finetune or eval."""
    about: str
    """One line for ``--help`` and the docs."""
    values: dict[str, dict]
    """Section -> field -> value; every field must exist in training/config.py (checked by the tests)."""


PRESETS: dict[tuple[str, str], Preset] = {
    (p.mode, p.name): p
    for p in (
        Preset("paper", "pretrain", "speed-prediction pretraining: K=4 clips at distinct signed speeds (1, 2, 4, 8, both "
               "directions), 16x112x112, TGN, SGD 0.01 with cosine decay, 300 epochs", {
                   "data": {**_CLIPS, "speeds": (-8, -4, -2, -1, 1, 2, 4, 8), "num_clips": 4, "batch_size": 8, "augment": True},
                   "model": {"norm": "tgn", "tgn_groups": (4, 4, 2, 1, 1), "head": "both", "hidden": 512, "dropout": 0.5},
                   "optim": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "warmup_steps": 500,
                             "min_lr_ratio": 0.01, "epochs": 300, "max_steps": 0},
               }),
        Preset("paper", "finetune", "action-recognition fine-tuning of the whole network: 16x112x112 clips at speed 1, "
               "SGD 0.01 with cosine decay, 150 epochs", {
                   "data": {**_CLIPS, "batch_size": 8, "augment": True, **_VALIDATION["data"]},
                   "optim": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "warmup_steps": 500,
                             "min_lr_ratio": 0.01, "epochs": 150, "max_steps": 0, "freeze_backbone": False},
                   "run": dict(_VALIDATION["run"]),
               }),
        Preset("linear", "finetune", "linear probe: only the classifier trains on frozen features (weights and BN/TGN "
               "statistics), SGD 0.1 without weight decay, 50 epochs", {
                   "data": {**_CLIPS, "batch_size": 32, "augment": True, **_VALIDATION["data"]},
                   "optim": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "warmup_steps": 0,
                             "min_lr_ratio": 0.01, "epochs": 50, "max_steps": 0, "freeze_backbone": True},
                   "run": dict(_VALIDATION["run"]),
               }),
        Preset("paper", "eval", "video accuracy from 10 evenly spaced centre-cropped clips per test video; retrieval "
               "R@1/5/10/20/50 with test videos as queries and train videos as the gallery (VCOP/PRP protocol)", {
                   "data": {**_CLIPS, "num_eval_clips": 10, "eval_batch_size": 8, "train_split": "train", "test_split": "test"},
               }),
    )
}


def preset_names(mode: str) -> list[str]:
    return sorted(name for m, name in PRESETS if m == mode)


def preset_values(mode: str, name: str | None) -> dict[str, dict]:
    """The sections of preset ``name`` for ``mode`` (``{}`` for None); a clear error for an unknown pair."""
    if name is None:
        return {}
    if (mode, name) not in PRESETS:
        raise ValueError(f"no preset {name!r} for {mode}; {mode} presets: {', '.join(preset_names(mode)) or 'none'}")
    return {section: dict(values) for section, values in PRESETS[mode, name].values.items()}


def merge(*layers: dict[str, dict]) -> dict[str, dict]:
    """Section-wise merge: later layers override earlier ones field by field."""
    merged: dict[str, dict] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


# ------------------------------------------------------------------------------------ wall-time estimate

#: Training clips/s (forward + backward, 16x112x112, base width 64) on one A100, per backbone. Not measured
#: on a GPU (none was available): the backbone's multiply-adds per clip counted by torch's flop counter on
#: the project's models (c3d 114.4, r3d_18 120.7, r2plus1d_18 121.2 G forward+backward) divided into a
#: published A100 ResNet-50 training rate at an assumed 50% efficiency for 3D convolutions; the arithmetic
#: is in BENCHMARKS.md "Scale on paper". Replace with the clips_per_s of your own run's metrics.jsonl.
ESTIMATED_A100_CLIPS_PER_S = {"c3d": 139.0, "r3d_18": 132.0, "r2plus1d_18": 132.0}

#: Videos per split of the official releases (UCF101 and HMDB51 split 1; Kinetics-400 as published,
#: before the few percent of clips a download always misses).
DATASET_VIDEOS = {
    "ucf101": {"train": 9537, "test": 3783},
    "hmdb51": {"train": 3570, "test": 1530},
    "kinetics400": {"train": 246534, "val": 19906},
}


#: Pretraining epochs on Kinetics-400 in docs/reproduce.md (``--epochs``): this project's choice, not the
#: paper's; Kinetics-400 has 26x UCF101's training videos, so 100 epochs are still 8.6x the UCF101 run's clips.
KINETICS_EPOCHS = 100


def wall_time_hours(mode: str, *, train_videos: int, test_videos: int = 0, epochs: int = 0, clips_per_sample: int = 1,
                    eval_clips: int = 10, clips_per_s: float, frozen: bool = False, val_videos: int = 0, validations: int = 0) -> float:
    """Hours of GPU compute for one stage, assuming the GPU is the bottleneck (the loader keeps up).

    ``clips_per_s`` is the training rate (forward + backward). A forward pass costs about a third of that
    (backward ~ 2x forward), which is what evaluation, validation and a frozen backbone pay per clip.
    ``train_videos``: the videos trained on (without the ``val_videos`` held out, scored ``validations`` times).
    """
    if mode == "eval":
        return (train_videos + test_videos) * eval_clips / (3 * clips_per_s) / 3600
    clips = epochs * train_videos * clips_per_sample
    return (clips / ((3 if frozen else 1) * clips_per_s) + validations * val_videos * eval_clips / (3 * clips_per_s)) / 3600


def validation_split(train_videos: int, fraction: float, epochs: int, every: int) -> tuple[int, int, int]:
    """(videos trained on, videos held out, validations) of a fine-tuning run (training/validation.py: the held-out
    count is rounded up; validation runs every ``every`` epochs and after the last step)."""
    held_out = math.ceil(fraction * train_videos)
    validations = (epochs // every if every else 0) + (1 if not every or epochs % every else 0) if fraction else 0
    return train_videos - held_out, held_out, validations


def estimate_table(arch: str, clips_per_s: float | None = None) -> list[tuple[str, str, float]]:
    """(step, arithmetic, hours) of every stage of docs/reproduce.md for ``arch`` on one GPU."""
    rate = clips_per_s or ESTIMATED_A100_CLIPS_PER_S[arch]
    pre, ft, lin = (PRESETS[m, n].values for m, n in (("pretrain", "paper"), ("finetune", "paper"), ("finetune", "linear")))
    k, rows = pre["data"]["num_clips"], []
    for data, sizes in (("UCF101 split 1", DATASET_VIDEOS["ucf101"]), ("Kinetics-400", DATASET_VIDEOS["kinetics400"])):
        epochs = pre["optim"]["epochs"] if data.startswith("UCF") else KINETICS_EPOCHS
        rows.append((f"pretrain on {data}", f"{epochs} ep x {sizes['train']} videos x {k} clips / {rate:.0f} clips/s",
                     wall_time_hours("pretrain", train_videos=sizes["train"], epochs=epochs, clips_per_sample=k, clips_per_s=rate)))
    for name, sizes in (("UCF101", DATASET_VIDEOS["ucf101"]), ("HMDB51", DATASET_VIDEOS["hmdb51"])):
        for preset, stage, frozen in ((ft, "fine-tune", False), (lin, "linear probe", True)):
            epochs = preset["optim"]["epochs"]
            trained, held_out, validations = validation_split(sizes["train"], preset["data"]["val_fraction"], epochs, preset["run"]["val_every"])
            rate_text = f"(3 x {rate:.0f} clips/s)" if frozen else f"{rate:.0f} clips/s"
            rows.append((f"{stage} on {name} split 1",
                         f"{epochs} ep x {trained} videos / {rate_text} + {validations} x {held_out} videos x 10 clips / (3 x {rate:.0f} clips/s)",
                         wall_time_hours("finetune", train_videos=trained, epochs=epochs, clips_per_s=rate, frozen=frozen,
                                         val_videos=held_out, validations=validations)))
        rows.append((f"eval on {name} split 1", f"({sizes['test']} + {sizes['train']}) videos x 10 clips / (3 x {rate:.0f} clips/s)",
                     wall_time_hours("eval", train_videos=sizes["train"], test_videos=sizes["test"], clips_per_s=rate)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.presets", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(ESTIMATED_A100_CLIPS_PER_S), default="r3d_18")
    p.add_argument("--clips-per-s", type=float, default=None,
                   help="measured training clips/s of one GPU (median clips_per_s of a run's metrics.jsonl); "
                        "default: the A100 estimate for --arch")
    args = p.parse_args(argv)
    for (mode, name), preset in sorted(PRESETS.items()):
        print(f"{mode} --preset {name}: {preset.about}")
        for section, values in preset.values.items():
            print(f"    {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    source = "measured (given)" if args.clips_per_s else "estimated A100 rate"
    print(f"\nWall time on one GPU, {args.arch}, {source}:")
    for step, arithmetic, hours in estimate_table(args.arch, args.clips_per_s):
        print(f"  {step:32s} {hours:7.1f} h   {arithmetic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
