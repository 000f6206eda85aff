"""Which samples of a split a run left out and why: said when the loader opens, kept in summary.json / eval.json.

Two kinds (counted by the loader, ``VideoLoader.stats``): videos the sampler *excludes* because they are too short
for the mode (pretrain: fewer than ``--num-clips`` speeds fit ``--num-frames`` frames; finetune and eval: fewer
than ``--num-frames`` frames), and bad samples (unreadable or truncated bytes, invalid json) *skipped* with
``--skip-bad-samples`` (without it the first one stops the run, naming its shard and key). The loader only
logs them, and train.py configures no logging: this module is how a user learns about them.
"""

from __future__ import annotations

from training import distributed

#: Exclusion reasons shown on the console (the JSON keeps them all).
SHOWN_REASONS = 3


def lines(loader, split: str) -> list[str]:
    """What the console says when ``loader`` (over ``split``) opens: its exclusions and the bad samples its scan skipped."""
    stats, out = loader.stats, []
    where = f"{split} split, {loader.cfg.mode} mode"
    if stats["excluded"]:
        out.append(f"{where}: excluded {stats['excluded']} of {stats['samples']} videos, {_reasons(stats)}; "
                   + ("lower --num-clips or --num-frames to keep them" if loader.cfg.mode == "pretrain" else "lower --num-frames to keep them"))
    if stats["skipped"]:
        out.append(f"{where}: skipped {stats['skipped']} bad sample(s) (--skip-bad-samples), first: "
                   f"{_sample(stats['skipped_samples'][0])}")
    return out


def report(loader, info: distributed.DistInfo) -> dict:
    """``{"videos", "used", "excluded", "excluded_reasons", "skipped", "skipped_samples"}`` of ``loader`` for the
    run's JSON. ``videos``: readable samples of the split; ``used``: those the sampler can draw from;
    ``skipped``: distinct bad samples over all ranks and epochs, listed in ``skipped_samples`` ({shard, key,
    reason}). Every rank must call it (the skipped samples are gathered)."""
    stats = loader.stats
    skipped: dict[tuple[str, str], dict] = {}
    for rank_samples in distributed.all_gather_objects(stats["skipped_samples"], info):
        for sample in rank_samples:
            skipped.setdefault((sample["shard"], sample["key"]), sample)
    return {"videos": stats["samples"], "used": len(loader.eligible), "excluded": stats["excluded"],
            "excluded_reasons": dict(stats["excluded_reasons"]), "skipped": len(skipped),
            "skipped_samples": [skipped[k] for k in sorted(skipped)]}


def nothing_to_load(loader, data: str, split: str, world_size: int) -> str:
    """The error when ``split`` gives no (full) batch: what was left out and why, and what to change."""
    stats, cfg = loader.stats, loader.cfg
    ranks = f" over {world_size} ranks" if world_size > 1 else ""
    what = (f"no full batch of --batch-size {cfg.batch_size} per rank{ranks}" if loader.eligible else "no usable video")
    parts = [f"{len(loader.eligible)} of {stats['samples']} videos usable in {cfg.mode} mode"]
    if stats["excluded"]:
        parts.append(f"{stats['excluded']} excluded: {_reasons(stats)}")
    if stats["skipped"]:
        parts.append(f"{stats['skipped']} bad sample(s) skipped")
    if loader.eligible:
        fix = "lower --batch-size, or add videos"
    elif stats["samples"]:
        fix = "lower --num-frames" + (" or --num-clips" if cfg.mode == "pretrain" else "") + ", or add longer videos"
    else:
        fix = "every sample is bad: rebuild the shards with `preprocess`"
    return f"--data {data} split {split!r}: {what}: {'; '.join(parts)} ({fix})"


def _reasons(stats: dict) -> str:
    reasons = sorted(stats["excluded_reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
    shown = "; ".join(f"{count} {reason}" for reason, count in reasons[:SHOWN_REASONS])
    return shown + (f"; {len(reasons) - SHOWN_REASONS} more reasons" if len(reasons) > SHOWN_REASONS else "")


def _sample(sample: dict) -> str:
    return f"{sample['key']!r} in {sample['shard']}: {sample['reason']}"
