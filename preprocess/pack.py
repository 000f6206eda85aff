"""Packing: staged outcomes in, shards out. Each ``KEY.json`` is made here (its schema: ``shardformat/sample.py``);
samples are shuffled by seed from key order and cut into shards, so the video-to-shard assignment
depends only on the inputs, the parameters and the seed, never on worker count or completion order."""

from __future__ import annotations

from pathlib import Path

from shardformat import encode_sample_json, index_path, read_index, split_member_name

from .inputs import Input, PreprocessError
from .media import CODECS, EncodeParams, Rejection
from .shard_writer import Member, PackItem, plan_shards, tar_bytes, write_shard

#: A sample ready to pack: its members in tar order, and its frame count.
Sample = tuple[list[Member], int]


def sample_json(item: Input, seg: dict, *, params: EncodeParams, label: int | None, segments: int) -> bytes:
    """The ``KEY.json`` of one stored segment of ``item``."""
    info = {
        "frames": seg["frames"], "fps": seg["fps"], "fps_rational": seg["fps_rational"], "width": seg["width"], "height": seg["height"],
        "codec": params.codec, "gop": 1 if CODECS[params.codec].all_intra else params.gop,
        "source": item.rel, "label": label, "label_name": item.label_name,
        "video_id": item.key, "segment_start": seg["segment_start"], "segment_index": seg["segment_index"],
        "num_segments": segments,
    }
    return encode_sample_json(info)


def collect_samples(unique: dict[str, Input], outcomes: dict[str, dict], plan_rejects: list[tuple[str, Rejection]], *,
                    staging: Path, params: EncodeParams, labels: dict[str, int]) -> tuple[dict[str, Sample], list[dict]]:
    """Every stored segment as a sample (by sample key), and every rejected input as a rejects row
    (``path``, ``reason``, ``stage``; sorted by path)."""
    missing = [unique[k].rel for k, r in outcomes.items() if r is None]
    if missing:  # only if staged files vanished under us
        raise PreprocessError(f"staged results missing for {len(missing)} inputs (e.g. {missing[0]}); rerun the command")
    samples: dict[str, Sample] = {}
    rejected = [{"path": rel, "reason": r.reason, "stage": r.stage} for rel, r in plan_rejects]
    for key, outcome in sorted(outcomes.items()):
        item = unique[key]
        if outcome["status"] != "ok":
            rejected.append({"path": item.rel, "reason": outcome["reason"], "stage": outcome["stage"]})
            continue
        label = labels.get(item.label_name) if item.label_name is not None else None
        for seg in outcome["segments"]:
            members = [Member(CODECS[params.codec].ext, path=staging / seg["file"]),
                       Member("json", data=sample_json(item, seg, params=params, label=label, segments=len(outcome["segments"])))]
            if label is not None:
                members.append(Member("cls", data=str(label).encode()))
            samples[Path(seg["file"]).stem] = (members, seg["frames"])
    rejected.sort(key=lambda r: r["path"])
    return samples, rejected


def write_split_shards(out: Path, split: str, samples: dict[str, Sample], *, seed: int, max_count: int, max_bytes: int) -> list[dict]:
    """Plan and write ``split``'s shards under ``OUT/shards``; returns their manifest entries.

    A rerun keeps shards already complete (same keys in the same order), removes a killed run's
    temporaries and any shard of this split that the plan no longer has."""
    items = [PackItem(k, tar_bytes([m.size for m in members])) for k, (members, _) in samples.items()]
    plan = plan_shards(items, seed=seed, max_count=max_count, max_bytes=max_bytes)
    shard_dir = out / "shards"
    for stale in shard_dir.glob(f".{split}-*.tmp*"):  # leftovers of a killed run (this split is locked)
        stale.unlink(missing_ok=True)
    entries = []
    for index, keys in enumerate(plan):
        tar_path = shard_dir / f"{split}-{index:06d}.tar"
        idx_path = index_path(tar_path)
        complete = tar_path.is_file() and idx_path.is_file() and _index_keys(idx_path) == keys
        if not complete:
            write_shard(tar_path, idx_path, [(k, samples[k][0]) for k in keys])
        entries.append({
            "tar": tar_path.relative_to(out).as_posix(), "index": idx_path.relative_to(out).as_posix(),
            "samples": len(keys), "frames": sum(samples[k][1] for k in keys), "bytes": tar_path.stat().st_size,
        })
    planned = {Path(e[kind]).name for e in entries for kind in ("tar", "index")}
    for extra in [*shard_dir.glob(f"{split}-*.tar"), *shard_dir.glob(f"{split}-*.idx")]:
        if extra.name not in planned:  # an interrupted run over a since-changed input set planned more shards
            extra.unlink()
    return entries


def _index_keys(idx_path: Path) -> list[str] | None:
    try:
        return [split_member_name(members[0].name)[0] for members in read_index(idx_path)]
    except ValueError:
        return None
