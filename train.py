"""Pretrain by playback-speed prediction, fine-tune for action recognition, evaluate.

    python train.py pretrain --data SHARDS --out runs/pre   [--arch r3d_18 --head both ...]
    python train.py finetune --data SHARDS --out runs/ft --init runs/pre/checkpoint.pt   (or --init scratch; keeps runs/ft/best.pt)
    python train.py eval     --data SHARDS --init runs/ft/best.pt                        (writes runs/ft/eval.json)
    torchrun --nproc_per_node 8 train.py pretrain ...                                   (DDP; NCCL on GPU, gloo on CPU)

`python train.py {pretrain,finetune,eval} --help` lists every option. Read top to bottom: setup -> data ->
model -> optimizer -> loop (train), and the same for eval. Resume is exact: a checkpoint records the step,
and the loader redraws an epoch identically from (seed, epoch), so `--resume` skips the batches of the
current epoch that were already consumed and restores every RNG stream. The global batches depend on
(seed, epoch, global batch size) only, so a run may resume on another world size (training/elastic.py).
A user's mistake (an option, a file, the data) is one line, `train.py: error: ...`, and exit status 2
(`--debug`: the traceback; training/errors.py); `main` raises it instead, for callers in Python.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from model import PretextModel, VideoClassifier, build_backbone, convert_sync_batchnorm, load_pretrained_backbone
from pipeline import ClipConfig, LoaderConfig, build_loader, list_shards
from pipeline.io.remote import is_url, remote_options
from pipeline.io.remote_shards import label_names
from shardformat import atomic_write
from training import checkpoint, data_report, distributed, elastic
from training.config import RunConfig, TrainConfig, parse_overrides, resolve
from training.errors import UsageError, run_command
from training.evaluate import EVAL_VIEW, gather_outputs, protocol
from training.logs import (MetricsLog, accuracy_text, console, fmt, plot_confusion, plot_curves, progress_display, read_jsonl,
                           results_table)
from training.metrics import RECALL_KS, accuracy, accuracy_tensor, classification_report, group_by_video, k_at_least, retrieval_recall
from training.optim import build_optimizer, build_scheduler
from training.prefetch import Prefetcher
from training.presets import merge, preset_values
from training.step_metrics import StepMetrics
from training.tensorboard import TensorBoardLog
from training.validation import VAL_METRIC, BestSoFar, Holdout, is_due, validate


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, run it, return its summary (what the demo and the tests read). A user's mistake
    raises (training/errors.py: UsageError, BadSampleError, ManifestError); `python train.py` reports it as one line."""
    mode, overrides = parse_overrides(argv)
    return run_mode(mode, overrides)


def cli(argv: list[str] | None = None) -> int:
    """``python train.py ...``: the exit status; a user's mistake is one line on stderr and status 2."""
    mode, overrides = parse_overrides(argv)  # a wrong option: one line and status 2 (pipeline/cli_syntax.py)
    return run_command(lambda: run_mode(mode, overrides), prog="train.py", debug=overrides.get("debug", False))


def run_mode(mode: str, overrides: dict) -> dict:
    """Run ``mode`` with the command line's ``overrides`` (:func:`training.config.parse_overrides`)."""
    run = overrides["run"]
    base, init_state = {}, None
    if run.get("init", "scratch") != "scratch" and mode in ("finetune", "eval"):
        init_state = checkpoint.load(run["init"], option="--init")
        stored = init_state["config"]
        base = {"model": stored["model"]} if mode == "finetune" else {"model": stored["model"], "data": _clip_settings(stored["data"])}
        if mode == "eval":
            run.setdefault("out", str(Path(run["init"]).parent))
    base = merge(preset_values(mode, overrides.pop("preset", None)), base)  # the checkpoint's network wins over a preset
    if run.get("auto_resume") and (Path(run.get("out", "runs/default")) / "checkpoint.pt").exists():
        run["resume"] = True  # decided once, before any rank can write a checkpoint of this job
    if run.get("resume"):
        base = _resumed_config(Path(run.get("out", RunConfig.out)))
    cfg = resolve(mode, overrides, base)
    info = distributed.setup(cfg.run.device)
    try:
        result = evaluate(cfg, info, init_state) if mode == "eval" else train(cfg, info, init_state)
    except BaseException:
        distributed.teardown(finished=False)
        raise
    distributed.teardown(finished=True)
    return result


def _resumed_config(out: Path) -> dict:
    """The stored config of the run in ``out`` that ``--resume`` continues (its checkpoint must be there too)."""
    config_path, ckpt_path = out / "config.json", out / "checkpoint.pt"
    if not config_path.is_file():
        raise UsageError(f"--resume: {config_path} not found: no run to resume in --out {out}")
    if not ckpt_path.is_file():
        raise UsageError(f"--resume: {ckpt_path} not found: the run in --out {out} stopped before its first checkpoint; "
                         "start it again without --resume")
    try:
        return json.loads(config_path.read_text())
    except (ValueError, OSError) as err:
        raise UsageError(f"--resume: {config_path} cannot be read ({err}); start the run again without --resume") from None


def _clip_settings(data: dict) -> dict:
    """What eval must take over from the checkpoint: how clips are cut (not where the data is, nor how many eval clips)."""
    keep = {f.name for f in dataclasses.fields(ClipConfig)} - {"num_eval_clips"}
    return {k: v for k, v in data.items() if k in keep}


def open_loader(cfg: TrainConfig, info: distributed.DistInfo, split: str, lcfg: LoaderConfig, select=None):
    """This rank's loader over ``split`` of ``--data`` (a folder or a URL); ``select``: see ``build_loader``.
    Says (rank 0) which videos the sampler excluded and which bad samples were skipped; refuses a split with
    no usable video."""
    data = cfg.data.data
    if not is_url(data) and not Path(data).is_dir():
        raise UsageError(f"--data {data}: no such folder (give the OUT folder written by `preprocess`)")
    try:
        remote = remote_options(cfg.data)  # the data options carry the same names as the CLI's remote options
        loader = build_loader(list_shards(data, split=split, remote=remote), lcfg, backend=cfg.data.backend,
                              rank=info.rank, world_size=info.world_size, num_workers=cfg.data.num_workers, device=info.device,
                              remote=remote, gpu_decode_threads=cfg.data.gpu_decode_threads, reuse_host_memory=True, select=select)
    except (OSError, ValueError) as err:  # a missing split or shard, an unreadable shard or index, a bad remote option
        raise UsageError(f"--data {data}: {err}") from None
    if info.is_main:
        for line in data_report.lines(loader, split):
            console.log(line)
    if not loader.eligible:
        loader.close()
        raise UsageError(data_report.nothing_to_load(loader, data, split, info.world_size))
    return loader


def loader_config(cfg: TrainConfig, mode: str, *, training: bool, world_size: int = 1) -> LoaderConfig:
    """``mode``: the loader's pretrain/finetune/eval; ``training``: batch size (this rank's share of the global
    batch over ``world_size`` ranks) and augmentation of training (else of eval). Without augmentation the view
    is the eval protocol's centre crop (training/evaluate.py), never the squashed frame."""
    d = cfg.data
    return LoaderConfig(
        mode=mode, **d.clip_settings(),
        batch_size=elastic.per_rank_batch_size(d.global_batch_size, d.batch_size, world_size) if training else d.eval_batch_size,
        augment=d.augment and training, eval_view=EVAL_VIEW, seed=cfg.run.seed, shuffle=training, skip_bad_samples=d.skip_bad_samples,
    )


def init_line(path: str, state: dict, dropped: list[str], num_classes: int) -> str:
    """The one log line saying what fine-tuning takes from its --init checkpoint and what it leaves."""
    line = f"init: the backbone of {path} ({state.get('mode', 'unknown')} checkpoint)"
    if "head" in dropped:  # fine-tuned before, e.g. on another dataset
        return line + f"; its classifier head ({len(state.get('classes') or [])} classes) is dropped, a new one for {num_classes} classes is trained"
    return line + (f"; its pretext heads ({', '.join(dropped)}) are not used" if dropped else "")


def build_model(cfg: TrainConfig, num_classes: int | None) -> torch.nn.Module:
    m = cfg.model
    backbone = build_backbone(m.arch, base_width=m.base_width, norm=m.norm, tgn_groups=m.tgn_groups)
    if num_classes is None:
        return PretextModel(backbone, num_clips=cfg.data.num_clips, num_speeds=len(cfg.data.speeds), head=m.head, hidden=m.hidden, dropout=m.dropout)
    return VideoClassifier(backbone, num_classes=num_classes, dropout=m.dropout)


def pretext_loss(out: dict[str, torch.Tensor], batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sorting loss (K!-way), per-clip speed loss, or their sum; and the matching accuracies (0-dim tensors)."""
    loss, stats = 0.0, {}
    if "order_logits" in out:
        loss = loss + F.cross_entropy(out["order_logits"].float(), batch["order_label"])
        stats["order_acc"] = accuracy_tensor(out["order_logits"].detach(), batch["order_label"])
    if "speed_logits" in out:
        logits = out["speed_logits"].flatten(0, 1).float()  # (B*K, num_speeds)
        loss = loss + F.cross_entropy(logits, batch["speed_label"].flatten())
        stats["speed_acc"] = accuracy_tensor(logits.detach(), batch["speed_label"].flatten())
    return loss, stats


def use_deterministic_algorithms(device: torch.device) -> None:
    """Deterministic kernels. On a GPU warn-only: 3D adaptive average pooling and max pooling have no
    deterministic CUDA backward, so strict mode would stop every run at its first backward pass."""
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """channels_last_3d on GPU, except for TGN: its grouped view of (B, C, T, H, W) needs the default layout
    (a channels-last input costs one copy per grouped layer; BENCHMARKS.md "GPU path")."""
    return cfg.run.channels_last and device.type == "cuda" and cfg.model.norm != "tgn"


def train(cfg: TrainConfig, info: distributed.DistInfo, init_state: dict | None) -> dict:
    # ---- setup
    pretrain = cfg.mode == "pretrain"
    validating = cfg.mode == "finetune" and cfg.data.val_fraction > 0  # held-out train videos; best.pt (training/validation.py)
    out = Path(cfg.run.out)
    ckpt_path, best_path = out / "checkpoint.pt", out / "best.pt"
    resume = checkpoint.load(ckpt_path) if cfg.run.resume else None
    device = info.device
    if cfg.run.deterministic:
        use_deterministic_algorithms(device)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.run.deterministic
    use_amp = cfg.run.amp and device.type == "cuda"
    channels_last = use_channels_last(cfg, device)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")  # --resume reads it: never half-written

    # ---- data
    lcfg = loader_config(cfg, "pretrain" if pretrain else "finetune", training=True, world_size=info.world_size)
    global_size = elastic.global_batch_size(cfg.data.global_batch_size, cfg.data.batch_size, info.world_size)
    if resume is not None:  # before the shards are scanned
        elastic.check_global_batch(resume, global_size=global_size, world_size=info.world_size)
    holdout = Holdout(cfg.data.val_fraction, cfg.run.seed, cfg.data.train_split) if validating else None
    loader = open_loader(cfg, info, cfg.data.train_split, lcfg, select=holdout.training if holdout else None)
    val_loader = open_loader(cfg, info, cfg.data.train_split, loader_config(cfg, "eval", training=False),
                             select=holdout.validation) if holdout else None  # never the test split
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        loader.close()
        raise UsageError(data_report.nothing_to_load(loader, cfg.data.data, cfg.data.train_split, info.world_size))
    total_steps = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    classes = None if pretrain else label_names(cfg.data.data, remote_options(cfg.data))

    # ---- model (same init on every rank; DDP also broadcasts rank 0's weights)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, None if pretrain else len(classes))
    if init_state is not None:
        dropped = load_pretrained_backbone(model, init_state["model"])
        if info.is_main:
            console.log(init_line(cfg.run.init, init_state, dropped, len(classes)))
    if cfg.optim.freeze_backbone:  # linear probe: the optimizer gets only the classifier's parameters
        model.backbone.requires_grad_(False)
    if resume is not None:
        model.load_state_dict(resume["model"])
    model.to(device, memory_format=torch.channels_last_3d if channels_last else torch.preserve_format)
    if info.enabled and device.type == "cuda" and cfg.run.sync_bn:
        model = convert_sync_batchnorm(model)
    raw_model = model  # what the optimizer and checkpoints see
    if cfg.run.compile:
        model = torch.compile(model)
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- optimizer
    optimizer = build_optimizer(raw_model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    step = 0
    best = BestSoFar.from_dict(resume.get("best") if resume is not None else None)  # the validation to beat
    if resume is not None:
        if resume["steps_per_epoch"] != steps_per_epoch:  # same global batch, other data
            raise ValueError(f"cannot resume exactly: {steps_per_epoch} batches per epoch now, {resume['steps_per_epoch']} in the checkpoint")
        optimizer.load_state_dict(resume["optimizer"])  # the same on every rank (DDP): any world size loads it
        scheduler.load_state_dict(resume["scheduler"])  # by global step
        step = resume["step"]
        if len(resume["rng"]) == info.world_size:
            checkpoint.set_rng_state(resume["rng"][info.rank])  # exact: this rank's own streams
        else:
            elastic.reseed(cfg.run.seed, step, info.rank)  # another world size: new streams for the new ranks
    else:
        torch.manual_seed(cfg.run.seed + 1000 * info.rank)  # dropout differs per rank, reproducibly

    def save(epoch: int) -> None:
        rng = distributed.all_gather_objects(checkpoint.rng_state(), info)  # every rank's streams, for exact resume
        if info.is_main:
            checkpoint.save_atomic({
                "model": checkpoint.unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "epoch": epoch, "steps_per_epoch": steps_per_epoch, "global_batch_size": global_size,
                "config": cfg.to_dict(), "rng": rng,
                "mode": cfg.mode, "classes": classes or [], "best": best.to_dict(),
            }, ckpt_path)

    def run_validation(epoch: int) -> None:
        """Score the held-out videos (every rank); rank 0 logs them and writes best.pt when they beat every earlier validation."""
        result = validate(raw_model, val_loader, device=device, amp=use_amp, channels_last=channels_last, info=info)
        improved = best.offer(result[VAL_METRIC], epoch=epoch, step=step)
        if not info.is_main:
            return
        val_log.write({"step": step, "epoch": epoch, **result, "best": improved})
        board.scalars(result, step=step, prefix="val")
        if improved:
            checkpoint.save_atomic({"model": checkpoint.unwrap(model).state_dict(), "step": step, "epoch": epoch, "config": cfg.to_dict(),
                                    "mode": cfg.mode, "classes": classes, "validation": {"metric": VAL_METRIC, **result}}, best_path)
        console.log(f"validation at step {step} (epoch {epoch}): video acc {result['video_acc']:.3f} clip acc {result['clip_acc']:.3f} "
                    f"loss {result['loss']:.4f} on {result['num_videos']} videos; best {VAL_METRIC} {fmt(best.value)} at epoch {best.epoch}"
                    + (f" (saved {best_path})" if improved else ""))

    # ---- loop
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if resume else None) if info.is_main else None
    val_log = MetricsLog(out / "validation.jsonl", resume_step=step if resume else None) if info.is_main and validating else None
    board = TensorBoardLog(out, enabled=cfg.run.tensorboard and info.is_main, purge_step=step + 1 if resume else None)
    sample_log = elastic.SampleLog(out, info, resume_step=step if resume else None) if cfg.run.log_samples else None
    if info.is_main:
        console.log(f"{cfg.mode}: {cfg.model.arch} on {device} x{info.world_size}, loader {loader.backend}, "
                    f"{steps_per_epoch} steps/epoch of {global_size} samples, {total_steps} steps"
                    + (f", resuming at step {step}" + (f" (checkpoint from {len(resume['rng'])} ranks)" if len(resume["rng"]) != info.world_size else "")
                       if resume else "")
                    + (", linear probe (backbone frozen)" if cfg.optim.freeze_backbone else "")
                    + (f", validating on {len({r.video_id for r in val_loader.eligible})} held-out train videos "
                       + (f"every {cfg.run.val_every} epochs and " if cfg.run.val_every else "") + "after the last step" if validating else ""))
        if loader.route_reason:
            console.log(f"loader: {loader.route_reason}")
        if cfg.run.tensorboard and not board.enabled:
            console.log("tensorboard is not installed: no event files (pip install tensorboard, or pass --no-tensorboard)")
    metrics = StepMetrics(info)  # device-side until each log window ends: no host sync per step
    started, steps_here = time.perf_counter(), 0
    model.train()
    if cfg.optim.freeze_backbone:
        raw_model.backbone.eval()  # BN/TGN normalize with the loaded statistics and do not update them
    with progress_display(cfg.run.progress and info.is_main) as progress:
        task = progress.add_task(cfg.mode, total=total_steps, completed=step, loss=float("nan"), accuracy="", clips_per_s=0.0, wait_pct=0.0)
        metrics.restart_clock()
        while step < total_steps and not (cfg.run.stop_after and steps_here >= cfg.run.stop_after):
            epoch, skip = divmod(step, steps_per_epoch)
            loader.set_epoch(epoch, start_batch=skip)  # resume: the epoch's consumed global batches are not read again
            batches = Prefetcher(loader, device, channels_last=channels_last)
            for batch in batches:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    if pretrain:
                        loss, stats = pretext_loss(model(batch["clips"]), batch)  # clips (B, K, 3, T, H, W)
                    else:
                        logits = model(batch["clips"][:, 0])  # (B, 1, 3, T, H, W) -> (B, C)
                        loss = F.cross_entropy(logits.float(), batch["label"], ignore_index=-1)
                        stats = {"acc": accuracy_tensor(logits.detach(), batch["label"])}
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
                optimizer.step()
                scheduler.step()
                step, steps_here = step + 1, steps_here + 1
                if sample_log is not None:
                    sample_log.write(step, batch)  # every rank: one gather of the step's keys and draws
                metrics.add(step=step, epoch=epoch, lr=scheduler.get_last_lr()[0], clips=batch["clips"].shape[0] * batch["clips"].shape[1],
                            wait_s=batches.last_wait_s, values={"loss": loss, **stats, "grad_norm": grad_norm})
                if info.is_main and steps_here == 1:  # what the model is fed: the first few samples, once per run (and per resumed run)
                    board.clips(f"{cfg.mode}/input_clips", batch["clips"][:4], step=step, mean=loader.cfg.mean, std=loader.cfg.std)
                end_of_epoch = step % steps_per_epoch == 0
                stopping = step >= total_steps or (cfg.run.stop_after and steps_here >= cfg.run.stop_after)
                saving = stopping or end_of_epoch or (cfg.run.ckpt_every and step % cfg.run.ckpt_every == 0)
                if saving or step % cfg.run.log_every == 0:
                    records = metrics.flush()  # every rank: one all-reduce and one host sync for the window
                    if info.is_main:
                        for record in records:
                            log.write(record)
                            board.scalars(record, step=record["step"], prefix=cfg.mode)
                        last = records[-1]
                        progress.update(task, completed=step, loss=last["loss"], accuracy=accuracy_text(last), clips_per_s=last["clips_per_s"],
                                        wait_pct=last["data_wait_pct"])
                        if step % cfg.run.log_every == 0 or step == total_steps:
                            console.log(f"step {step}/{total_steps} loss {last['loss']:.4f} {accuracy_text(last)} lr {last['lr']:.2e} "
                                        f"{last['clips_per_s']:.1f} clips/s data-wait {last['data_wait_pct']:.0f}%")
                if validating and is_due(step, steps_per_epoch=steps_per_epoch, total_steps=total_steps, every_epochs=cfg.run.val_every):
                    run_validation(epoch)  # before the checkpoint, which keeps the best so far for a resumed run
                if saving:
                    save(epoch)
                if stopping:
                    break

    loader.close()  # its workers live for the whole run (they prefetch across epochs): stop them now, not at garbage collection
    if val_loader is not None:
        val_loader.close()
    distributed.broadcast_buffers(raw_model, info)  # every rank ends with the checkpoint's exact state

    # ---- report
    summary = {"mode": cfg.mode, "step": step, "total_steps": total_steps, "out": str(out), "checkpoint": str(ckpt_path),
               "samples": data_report.report(loader, info)}  # every rank: the skipped samples are gathered
    if validating:  # the chosen checkpoint: eval it with --init OUT/best.pt
        summary["validation"] = {"metric": VAL_METRIC, "best": best.value, "best_epoch": best.epoch, "best_step": best.step,
                                 "best_checkpoint": str(best_path) if best.step is not None else None,
                                 "fraction": cfg.data.val_fraction, "every_epochs": cfg.run.val_every,
                                 "videos": len({r.video_id for r in val_loader.eligible}), "protocol": protocol(cfg.data)}
    if info.is_main:
        log.close()
        if val_log is not None:
            val_log.close()
        board.close()
        if sample_log is not None:
            sample_log.close()
        records = read_jsonl(out / "metrics.jsonl")
        window = records[-max(1, min(len(records), steps_per_epoch)):]  # the last epoch (or what ran of it)
        for key in ("loss", "acc", "order_acc", "speed_acc", "clips_per_s", "data_wait_pct"):
            if window and key in window[0]:
                summary[f"final_{key}"] = sum(r[key] for r in window) / len(window)
        summary["wall_s"] = time.perf_counter() - started
        plot_curves(records, out / "curves.png", f"{cfg.mode} {cfg.model.arch} ({out.name})",
                    validation=read_jsonl(out / "validation.jsonl") if validating else ())
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        console.log(f"{cfg.mode} done: step {step}, {summary['wall_s']:.0f} s, checkpoint {ckpt_path}")
    return summary


@torch.no_grad()
def evaluate(cfg: TrainConfig, info: distributed.DistInfo, state: dict | None) -> dict:
    """Accuracy on the test split (classifier: clip/video top-1 and top-5, per-class accuracy, confusion matrix;
    pretext: pretext accuracy) and retrieval recall with backbone features (test split as queries, train split
    as gallery), all with the eval protocol's clips (training/evaluate.py)."""
    # ---- setup and model
    device = info.device
    stored_mode = state["mode"] if state is not None else "scratch"
    classes = state.get("classes") if state is not None else None
    if stored_mode == "finetune":
        data_classes = label_names(cfg.data.data, remote_options(cfg.data))
        if list(classes) != list(data_classes):
            raise ValueError(f"--init {cfg.run.init} classifies {len(classes)} classes, --data {cfg.data.data} has {len(data_classes)} "
                             f"other ones: evaluate it on the data it was fine-tuned on, or fine-tune it on this data first")
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, len(classes) if stored_mode == "finetune" else None).to(device).eval()
    if state is not None:
        model.load_state_dict(state["model"])

    def run(split: str, mode: str, forward) -> dict:
        """Every video of ``split`` once (split over ranks, gathered from all of them)."""
        lcfg = loader_config(cfg, mode, training=False)
        if mode == "pretrain":  # pretext batches are always full: batches of 1 leave no video out
            lcfg = dataclasses.replace(lcfg, batch_size=1)
        loader = open_loader(cfg, info, split, lcfg)
        try:
            outputs = gather_outputs(loader, forward, device=device, amp=cfg.run.amp, info=info)
        finally:
            loader.close()
        results["samples"].setdefault(split, {})[mode] = data_report.report(loader, info)  # every rank: skipped samples are gathered
        return outputs

    def clip_features(batch: dict) -> dict:
        b, k = batch["clips"].shape[:2]
        feats = model.backbone(batch["clips"].flatten(0, 1))  # (B*K, D)
        out = {"features": feats.reshape(b, k, -1)}
        if stored_mode == "finetune":
            out["logits"] = model.head(feats).reshape(b, k, -1)  # (B, K, C)
        return out

    # ---- test split: accuracy and query features
    results: dict = {"checkpoint": cfg.run.init, "kind": stored_mode, "arch": cfg.model.arch, "data": cfg.data.data,
                     "protocol": protocol(cfg.data), "samples": {}}
    if state is not None and "validation" in state:  # best.pt: the validation that chose it
        results["chosen_by"] = {"epoch": state["epoch"], "step": state["step"], **state["validation"]}
    if stored_mode == "pretrain":
        pretext = run(cfg.data.test_split, "pretrain", lambda b: {k: v for k, v in model(b["clips"]).items()} | {
            "order_label": b["order_label"], "speed_label": b["speed_label"]})
        if "order_logits" in pretext:
            results["pretext_order_acc"] = accuracy(pretext["order_logits"], pretext["order_label"])
            results["pretext_order_chance"] = 1 / pretext["order_logits"].shape[1]
        if "speed_logits" in pretext:
            results["pretext_speed_acc"] = accuracy(pretext["speed_logits"].flatten(0, 1), pretext["speed_label"].flatten())
            results["pretext_speed_chance"] = 1 / len(cfg.data.speeds)
    test = run(cfg.data.test_split, "eval", clip_features)
    confusion = None
    if "logits" in test:
        report, confusion = classification_report(test["video_id"], test["logits"], test["label"], classes)
        results.update(report)
        results["chance"] = 1 / test["logits"].shape[-1]
    # ---- train split: the retrieval gallery
    gallery = run(cfg.data.train_split, "eval", clip_features)
    _, q, q_labels = group_by_video(test["video_id"], test["features"], test["label"])
    _, g, g_labels = group_by_video(gallery["video_id"], gallery["features"], gallery["label"])
    results["retrieval"] = retrieval_recall(q, q_labels, g, g_labels, RECALL_KS)
    results["retrieval"]["queries"], results["retrieval"]["gallery"] = len(q), len(g)
    results["retrieval"]["k_at_least_gallery"] = k_at_least(RECALL_KS, len(g), "R@")

    if info.is_main:
        out = Path(cfg.run.out)
        out.mkdir(parents=True, exist_ok=True)
        if confusion is not None:  # rows: true class, columns: predicted class, counts of test videos
            (out / "confusion.json").write_text(json.dumps({"classes": classes, "rows": "true class", "columns": "predicted class",
                                                            "unit": "test videos", "matrix": confusion.tolist()}) + "\n")
            plot_confusion(confusion, classes, out / "confusion.png", f"{cfg.run.init} on {cfg.data.data}: video accuracy {results['video_acc']:.3f}")
            results["confusion"] = {"json": "confusion.json", "png": "confusion.png"}  # beside eval.json
        (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
        board = TensorBoardLog(out, enabled=cfg.run.tensorboard)  # at the evaluated checkpoint's step, beside its training curves
        board.scalars({**results, **{k: v for k, v in results["retrieval"].items() if k.startswith("R@")}},
                      step=state["step"] if state is not None else 0, prefix="eval")
        board.close()
        not_ranked = {f"{part}_{k}" for k in results.get("k_at_least_classes", []) for part in ("clip", "video")}
        rows = [(k, fmt(v) + (" (k >= classes: not a ranking)" if k in not_ranked else "")) for k, v in results.items() if isinstance(v, float)]
        not_ranked = set(results["retrieval"]["k_at_least_gallery"])
        rows += [(f"retrieval {k}", fmt(v) + (" (k >= gallery: not a ranking)" if k in not_ranked else ""))
                 for k, v in results["retrieval"].items() if not isinstance(v, list)]
        table = results_table(f"eval ({stored_mode})", rows, ("metric", "value"))
        table.caption = f"{cfg.run.init} on {cfg.data.data}; {results['protocol']['view']}, {results['protocol']['clips_per_video']} clips per video"
        console.print(table)
    return results


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
