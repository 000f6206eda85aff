"""``preprocess --partition I/N`` and ``preprocess --merge OUT``: one split built by N independent jobs
(a SLURM array, a Kubernetes Indexed Job, ``torchrun``-style ranks), then merged into one manifest.

* Partition ``I`` takes the inputs whose key (the SHA-1 of the relative path, see ``inputs.Input``) falls in
  it: ``int(key, 16) % N == I``. The assignment depends only on each input's path, never on the listing's
  order or on the other inputs, and the partitions are disjoint and cover every input.
* Every partition lists all the inputs: the label map and the input-set fingerprint come from the full
  listing, so all partitions agree on them; each writes a complete shard set of its own under
  ``OUT/parts/I-of-N/`` (shards, manifest, rejects), resumable like any build.
* ``--merge`` checks that all N partitions are there and complete, built with the same parameters from the
  same full listing with the same label map, and writes ``OUT/manifest.json`` (and ``OUT/rejects.jsonl``)
  listing every partition's shards under their ``parts/I-of-N/`` paths; no shard is copied or rewritten.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from shardformat import atomic_write, load_manifest, manifest_lock, save_manifest

from .inputs import PreprocessError

PARTS_DIR = "parts"
_SPEC = re.compile(r"^(\d+)/(\d+)$")


def parse_partition(spec: str, environ=os.environ) -> tuple[int, int]:
    """``"I/N"`` -> (I, N); ``"auto"`` reads a scheduler's environment (SLURM array, Kubernetes Indexed Job
    with ``JOB_COMPLETIONS`` set, or ``RANK``/``WORLD_SIZE``)."""
    if spec == "auto":
        index, count, source = _from_environment(environ)
    else:
        match = _SPEC.match(spec.strip())
        if not match:
            raise PreprocessError(f"--partition must be I/N (e.g. 3/8) or auto, got {spec!r}")
        index, count, source = int(match[1]), int(match[2]), "--partition"
    if count < 1 or not 0 <= index < count:
        raise PreprocessError(f"{source}: need 0 <= I < N, got I={index}, N={count}")
    return index, count


def _from_environment(environ) -> tuple[int, int, str]:
    def number(name: str) -> int:
        try:
            return int(environ[name])
        except ValueError:
            raise PreprocessError(f"--partition auto: {name}={environ[name]!r} is not an integer") from None

    if "SLURM_ARRAY_TASK_ID" in environ:
        if "SLURM_ARRAY_TASK_COUNT" not in environ:
            raise PreprocessError("--partition auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
        # --array=1-8 numbers tasks from 1: partitions are counted from the array's first task id
        first = number("SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
        return number("SLURM_ARRAY_TASK_ID") - first, number("SLURM_ARRAY_TASK_COUNT"), "SLURM_ARRAY_TASK_ID/COUNT"
    if "JOB_COMPLETION_INDEX" in environ:
        if "JOB_COMPLETIONS" not in environ:
            raise PreprocessError("--partition auto: JOB_COMPLETION_INDEX is set but JOB_COMPLETIONS is not "
                                  "(Kubernetes does not set the count: add it to the pod's env, equal to spec.completions)")
        return number("JOB_COMPLETION_INDEX"), number("JOB_COMPLETIONS"), "JOB_COMPLETION_INDEX/JOB_COMPLETIONS"
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return number("RANK"), number("WORLD_SIZE"), "RANK/WORLD_SIZE"
    raise PreprocessError("--partition auto: none of SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, "
                          "JOB_COMPLETION_INDEX/JOB_COMPLETIONS or RANK/WORLD_SIZE is set")


def in_partition(key: str, partition: tuple[int, int]) -> bool:
    index, count = partition
    return int(key, 16) % count == index


def restrict_to_partition(inputs: list, unique: dict, plan_rejects: list, partition: tuple[int, int]) -> tuple[list, dict, list]:
    """The full listing's ``inputs``, screened ``unique`` inputs (by key) and screening ``plan_rejects``
    (``(rel, Rejection)``), each cut down to partition ``partition``."""
    mine = [i for i in inputs if in_partition(i.key, partition)]
    rels = {i.rel for i in mine}
    return (mine, {k: i for k, i in unique.items() if in_partition(k, partition)},
            [(rel, r) for rel, r in plan_rejects if rel in rels])


def part_dir(out: Path, partition: tuple[int, int]) -> Path:
    index, count = partition
    return Path(out) / PARTS_DIR / f"{index}-of-{count}"


def merge_partitions(out: Path, split: str) -> dict:
    """Write ``split`` of ``OUT/manifest.json`` from the N partitions under ``OUT/parts/``; returns its entry."""
    out = Path(out)
    parts = sorted((out / PARTS_DIR).glob("*-of-*")) if (out / PARTS_DIR).is_dir() else []
    if not parts:
        raise PreprocessError(f"no partitions under {out / PARTS_DIR} (run `preprocess SRC {out} --partition I/N` first)")
    counts = {p.name.split("-of-")[1] for p in parts}
    if len(counts) != 1 or not all(re.fullmatch(r"\d+-of-\d+", p.name) for p in parts):
        raise PreprocessError(f"{out / PARTS_DIR} mixes partitionings: {sorted(p.name for p in parts)} (keep one N)")
    count = int(counts.pop())
    missing = sorted(set(range(count)) - {int(p.name.split("-of-")[0]) for p in parts})
    if missing:
        raise PreprocessError(f"partitions {missing} of {count} are missing under {out / PARTS_DIR}")
    entries, labels, reference = [], None, None
    rejects = []
    for index in range(count):
        part = part_dir(out, (index, count))
        manifest = load_manifest(part)
        entry = manifest["splits"].get(split)
        if entry is None:
            raise PreprocessError(f"partition {index}/{count} has no complete split {split!r} ({part}): it has not finished")
        if entry["params"].get("partition") != [index, count]:
            raise PreprocessError(f"{part} holds partition {entry['params'].get('partition')}, not {[index, count]}")
        missing_files = [s["tar"] for s in entry["shards"] if not (part / s["tar"]).is_file() or not (part / s["index"]).is_file()]
        if missing_files:
            raise PreprocessError(f"partition {index}/{count}: {missing_files[0]} is missing")
        same = {"params": {k: v for k, v in entry["params"].items() if k != "partition"},
                "input_fingerprint": entry["input_fingerprint"], "label_map": manifest["label_map"]}
        if reference is None:
            reference = same
        for name, value in same.items():
            if value != reference[name]:
                raise PreprocessError(f"partition {index}/{count} differs from partition 0 in its {name.replace('_', ' ')}: "
                                      "all partitions must be built with the same inputs and parameters")
        entries.append((index, entry))
        labels = manifest["label_map"]
        rejects_path = part / "rejects.jsonl"
        if rejects_path.exists():
            rejects += [r for r in map(json.loads, rejects_path.read_text().splitlines()) if r.get("split") == split]

    def moved(path: str, index: int) -> str:
        return f"{PARTS_DIR}/{index}-of-{count}/{path}"

    shards = [{**s, "tar": moved(s["tar"], i), "index": moved(s["index"], i)} for i, e in entries for s in e["shards"]]
    first = entries[0][1]
    merged = {
        **{k: v for k, v in first.items() if k not in ("shards", "params")},
        "shards": shards,
        "params": reference["params"],
        "partitions": count,
        **{name: sum(e[name] for _, e in entries) for name in ("samples", "videos", "inputs", "rejected", "frames", "bytes")},
    }
    with manifest_lock(out):
        manifest = load_manifest(out)
        # another split merged earlier may know fewer labels (the partitions extended the map since), never others
        if any(labels.get(name) != value for name, value in manifest["label_map"].items()):
            raise PreprocessError(f"{out}/manifest.json has a label map that the partitions' map does not extend: "
                                  f"{manifest['label_map']} vs {labels}")
        manifest["label_map"] = labels
        manifest["splits"][split] = merged
        save_manifest(out, manifest)
        others = []
        if (out / "rejects.jsonl").exists():
            others = [r for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines()) if r.get("split") != split]
        atomic_write(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in others + rejects))
    return merged
