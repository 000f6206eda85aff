"""``build_shards``: a folder or list of videos in, one split's WebDataset shards out.

The run has three phases, each restartable after a crash (SIGKILL included):

1. **Plan**: list the inputs, give each a key (first 16 hex digits of the SHA-1 of its relative path),
   fix the label map (shared by all splits of OUT, stored in the manifest).
2. **Transcode** (parallel over worker processes): each input is re-encoded into
   ``OUT/.staging/{split}/`` and its outcome (stored segments, or a rejection reason) is written
   there as ``KEY.result.json``, atomically and last. A rerun skips inputs that already have one.
3. **Pack** (parent process, once every input has an outcome): samples are shuffled by ``seed``
   from key order and cut into shards, so the video-to-shard assignment depends only on the inputs,
   the parameters and the seed, never on worker count or completion order. Each ``.idx``/``.tar`` is
   written under a temporary name, fsynced and renamed; a rerun keeps shards already complete.
   Finally the manifest and ``rejects.jsonl`` are updated (atomically) and the staging folder removed.

Rerunning a finished split with the same inputs and parameters does nothing; with different
parameters or inputs it is refused (delete the split's shards and manifest entry, or use another OUT).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from . import media
from .media import CODECS, EncodeParams, Rejection, process_video
from .shards import Member, PackItem, atomic_write, plan_shards, read_index, tar_bytes, write_shard

MANIFEST_FORMAT = "speedssl-shards/1"

#: Files in a source folder that are never inputs: hidden files and these sidecar extensions
#: (annotations, subtitles, lists, notes). Every other file is an input and is either written or rejected.
SIDECAR_EXTENSIONS = frozenset(
    ".txt .md .rst .json .jsonl .csv .tsv .xml .yaml .yml .ini .cfg .log .nfo .srt .vtt .ass .ssa .sub .idx .lst .db .sha1 .md5".split()
)


class PreprocessError(Exception):
    """A problem with the job as a whole (unusable SRC/OUT, conflicting parameters): nothing is built."""


@dataclass
class BuildResult:
    """Outcome of one ``build_shards`` call (one split)."""

    split: str
    written: int
    """Samples written to this split's shards (one per video, or one per segment with ``max_frames``)."""
    videos_written: int
    """Source videos with at least one written sample; ``videos_written + len(rejected) == inputs``."""
    rejected: list[dict]
    """One dict per rejected input: ``path`` (relative to SRC), ``reason``, ``stage``."""
    inputs: int
    shards: list[Path]
    manifest_path: Path
    total_frames: int
    total_bytes: int
    """Bytes of this split's tar files."""
    wall_s: float
    already_complete: bool = False
    """True when OUT already held this split, built from the same inputs and parameters (nothing was done)."""


@dataclass(frozen=True)
class Input:
    path: Path
    """Absolute path of the source file."""
    rel: str
    """Path relative to SRC (or as written in the list file), with ``/`` separators: the sample's ``source``."""
    label_name: str | None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.rel.encode("utf-8", "surrogateescape")).hexdigest()
        object.__setattr__(self, "key", digest[:16])


# ------------------------------------------------------------------------------------------------ inputs


def _is_input_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() not in SIDECAR_EXTENSIONS


def list_folder(src: Path, *, labels_from_dirs: bool, exclude: Path | None = None) -> list[Input]:
    """Every non-hidden, non-sidecar file under ``src`` (recursively, sorted), skipping ``exclude``
    (OUT, when it lies inside SRC). With ``labels_from_dirs`` the label is the top-level folder name."""
    inputs = []
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude))
        for name in sorted(files):
            path = root_path / name
            if not _is_input_file(path) or not (path.is_file() or path.is_symlink()):
                continue
            rel = path.relative_to(src).as_posix()
            label = rel.split("/", 1)[0] if labels_from_dirs and "/" in rel else None
            inputs.append(Input(path.absolute(), rel, label))
    return inputs


def list_file(list_path: Path, *, labels_from_dirs: bool) -> list[Input]:
    """Rows ``path[,label]`` of a CSV (or TSV, by extension) file; paths relative to the list's folder.

    A header row whose first cell is ``path`` is skipped; blank lines and ``#`` comments are ignored.
    Without a label cell and with ``labels_from_dirs``, the label is the file's parent folder name.
    """
    delimiter = "\t" if list_path.suffix.lower() == ".tsv" else ","
    with open(list_path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row and row[0].strip() and not row[0].lstrip().startswith("#")]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    inputs = []
    for row in rows:
        rel = row[0].strip()
        label = row[1].strip() if len(row) > 1 and row[1].strip() else None
        path = (list_path.parent / rel).absolute()
        if label is None and labels_from_dirs and path.parent != list_path.parent.absolute():
            label = path.parent.name
        inputs.append(Input(path, Path(rel).as_posix(), label))
    return inputs


# ------------------------------------------------------------------------------------------- OUT state


@contextlib.contextmanager
def _locked(path: Path, *, blocking: bool = True) -> Iterator[None]:
    """An exclusive ``flock`` (released by the kernel if the process dies)."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise PreprocessError(f"another preprocess run holds {path}: wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_manifest(out: Path) -> dict:
    path = out / "manifest.json"
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "label_map": {}, "splits": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise PreprocessError(f"{path} is not a {MANIFEST_FORMAT} manifest")
    return manifest


def _save_manifest(out: Path, manifest: dict) -> None:
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _read_rejects(out: Path) -> list[dict]:
    path = out / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def tool_versions() -> dict:
    def first_line(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    packages = {}
    for name in ("speedssl", "ffmpeg-python", "numpy", "webdataset", "nvidia-dali-cuda120", "av"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    import av  # its bundled FFmpeg inspects sources and validates outputs

    return {"ffmpeg": first_line(["ffmpeg", "-version"]), "ffprobe": first_line(["ffprobe", "-version"]),
            "pyav_ffmpeg": getattr(av, "ffmpeg_version_info", "unknown"),
            "python": platform.python_version(), "packages": packages}


def _label_map(inputs: list[Input], existing: dict[str, int], forced: dict[str, int] | None) -> dict[str, int]:
    """The label map after this split: ``existing`` (from OUT) merged with ``forced``, extended with
    this split's new names in sorted order (unless forced: then it is exactly existing + forced)."""
    merged = dict(existing)
    if forced is not None:
        for name, value in forced.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise PreprocessError(f"label map: value for {name!r} must be an int, got {value!r}")
            if merged.get(name, value) != value:
                raise PreprocessError(f"label map: {name!r} -> {value} conflicts with OUT's label map ({name!r} -> {merged[name]})")
            merged[name] = value
        if len(set(merged.values())) != len(merged):
            raise PreprocessError("label map: two names map to the same integer (given map merged with OUT's)")
        return merged
    for name in sorted({i.label_name for i in inputs if i.label_name is not None} - merged.keys()):
        merged[name] = max(merged.values(), default=-1) + 1
    return merged


def _fingerprint(inputs: list[Input]) -> str:
    lines = []
    for item in sorted(inputs, key=lambda i: i.rel):
        size = item.path.stat().st_size if item.path.is_file() else -1
        lines.append(f"{item.rel}\t{size}\t{item.label_name}")
    return hashlib.sha1("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


# ---------------------------------------------------------------------------------------------- workers


def _record(staging: Path, key: str, outcome: list[media.Segment] | Rejection) -> dict:
    if isinstance(outcome, Rejection):
        record = {"status": "rejected", "reason": outcome.reason, "stage": outcome.stage}
    else:
        record = {"status": "ok", "segments": [asdict(s) for s in outcome]}
    atomic_write(staging / f"{key}.result.json", json.dumps(record, sort_keys=True))
    return record


def _transcode_task(src: str, staging: str, key: str, params: EncodeParams) -> None:
    """Worker entry point: transcode one input and record its outcome atomically in the staging folder.

    A ``KEY.started`` marker lives while it runs, so a worker crash (a decoder segfault, an OOM kill)
    can be pinned on the inputs that were in flight.
    """
    marker = Path(staging) / f"{key}.started"
    marker.touch()
    _record(Path(staging), key, process_video(Path(src), Path(staging), key, params))
    marker.unlink(missing_ok=True)


def _init_worker(parent_pid: int) -> None:
    """Pool worker set-up: die with the builder (and take ffmpeg along) instead of lingering as an orphan."""
    media.die_with_parent()
    media.FFMPEG_DIES_WITH_PARENT = True
    if os.getppid() != parent_pid:  # the builder died before prctl took effect
        os._exit(1)


def _load_record(staging: Path, key: str) -> dict | None:
    """The staged outcome for ``key``, or None if absent or its files are gone (then it is redone)."""
    path = staging / f"{key}.result.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record["status"] == "ok" and not all((staging / s["file"]).is_file() for s in record["segments"]):
        return None
    return record


def _run_pool(items: list[Input], staging: Path, params: EncodeParams, workers: int,
              advance: Callable[[], None]) -> tuple[bool, int]:
    """Transcode ``items`` in a pool of ``workers`` processes.

    Returns (False if a worker process died, number of outcomes reported to ``advance``)."""
    reported = 0
    for item in items:
        (staging / f"{item.key}.started").unlink(missing_ok=True)
    # spawn: workers inherit no file descriptors (in particular not the split lock) and no threads.
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_transcode_task, str(i.path), str(staging), i.key, params) for i in items]
        try:
            for future in as_completed(futures):
                future.result()
                advance()
                reported += 1
        except BrokenProcessPool:
            return False, reported
        except BaseException:  # a job-level failure (full disk, Ctrl-C): do not start the queued inputs
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return True, reported


def _transcode_all(todo: list[Input], staging: Path, params: EncodeParams, workers: int,
                   advance: Callable[[], None]) -> None:
    """Transcode every input of ``todo`` into the staging folder; a worker crash never ends the batch.

    After a crash the inputs that were in flight are retried one per fresh process, so the one that
    crashes again is rejected alone; the others go on in a new pool.
    """
    remaining = list(todo)
    while remaining:
        finished, reported = _run_pool(remaining, staging, params, workers, advance)
        if finished:
            return
        pending = [i for i in remaining if _load_record(staging, i.key) is None]
        for _ in range(len(remaining) - len(pending) - reported):  # done, but not reported before the crash
            advance()
        suspects = [i for i in pending if (staging / f"{i.key}.started").exists()] or pending
        for item in suspects:
            if not _run_pool([item], staging, params, 1, advance)[0]:
                _record(staging, item.key, Rejection("worker process crashed on this file (e.g. a decoder segfault or out of memory)", "transcode"))
                advance()
        remaining = [i for i in pending if _load_record(staging, i.key) is None]


# ------------------------------------------------------------------------------------------------ build


def _resolve_src(src: Path, out: Path, labels_from_dirs: bool) -> list[Input]:
    if not src.exists():
        raise PreprocessError(f"SRC {src} does not exist")
    if src.is_dir():
        inputs = list_folder(src, labels_from_dirs=labels_from_dirs, exclude=out.resolve())
        if not inputs:
            raise PreprocessError(f"SRC folder {src} holds no input files")
    elif src.is_file():
        if src.suffix.lower() not in {".csv", ".tsv", ".txt", ".lst"}:
            raise PreprocessError(f"SRC {src} must be a folder or a .csv/.tsv list of `path,label` rows")
        try:
            inputs = list_file(src, labels_from_dirs=labels_from_dirs)
        except (UnicodeDecodeError, csv.Error) as err:
            raise PreprocessError(f"SRC list {src} is not a readable CSV/TSV file: {err}") from None
        if not inputs:
            raise PreprocessError(f"SRC list {src} has no rows")
    else:
        raise PreprocessError(f"SRC {src} is neither a folder nor a list file")
    return inputs


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PreprocessError(f"OUT {out} exists and is not a folder")
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PreprocessError(f"OUT {out} is not writable: {err.strerror or err}") from None


def _sample_json(item: Input, seg: dict, *, params: EncodeParams, label: int | None, segments: int) -> bytes:
    info = {
        "frames": seg["frames"], "fps": seg["fps"], "fps_rational": seg["fps_rational"], "width": seg["width"], "height": seg["height"],
        "codec": params.codec, "gop": 1 if CODECS[params.codec].all_intra else params.gop,
        "source": item.rel, "label": label, "label_name": item.label_name,
        "video_id": item.key, "segment_start": seg["segment_start"], "segment_index": seg["segment_index"],
        "num_segments": segments,
    }
    return (json.dumps(info, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _screen(inputs: list[Input], labels: dict[str, int], *, require_label: bool) -> tuple[dict[str, Input], list[tuple[str, Rejection]]]:
    """Inputs to transcode (by key) and those rejected before any decoding (duplicates, labels)."""
    unique: dict[str, Input] = {}
    rejects: list[tuple[str, Rejection]] = []
    seen: set[str] = set()
    for item in inputs:
        if item.rel in seen:
            rejects.append((item.rel, Rejection("duplicate entry in the input list", "input")))
        elif require_label and item.label_name is None:
            rejects.append((item.rel, Rejection("unlabelled: not inside a class folder (--labels-from-dirs)", "input")))
        elif item.label_name is not None and item.label_name not in labels:
            rejects.append((item.rel, Rejection(f"label {item.label_name!r} is not in the given label map", "input")))
        else:
            unique[item.key] = item
        seen.add(item.rel)
    return unique, rejects


def build_shards(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    labels_from_dirs: bool = False,
    short_side: int = 128,
    fps: float | None = None,
    codec: str = "vp9",
    gop: int = 16,
    max_frames: int | None = None,
    min_frames: int = 16,
    workers: int | None = None,
    shard_max_count: int = 1000,
    shard_max_bytes: int = 1 << 30,
    seed: int = 0,
    strict: bool = False,
    label_map: dict[str, int] | None = None,
    progress: bool = True,
) -> BuildResult:
    """Re-encode every video under ``src`` (a folder, or a CSV/TSV list of ``path,label`` rows) and write
    split ``split`` of the shard set in ``out`` (layout: docs/design.md §1; details: docs/preprocess.md).

    ``strict`` only changes the CLI's exit status (non-zero if anything was rejected); the shards are
    the same. Raises :class:`PreprocessError` for an unusable SRC/OUT or conflicting parameters.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    if not split or not all(c.isalnum() or c in "_" for c in split):
        raise PreprocessError(f"split name must be letters, digits or '_' (no '-' or '.'), got {split!r}")
    try:
        params = EncodeParams(short_side=short_side, fps=fps, codec=codec, gop=gop, max_frames=max_frames, min_frames=min_frames)
    except ValueError as err:
        raise PreprocessError(str(err)) from None
    if shard_max_count < 1 or shard_max_bytes < 1:
        raise PreprocessError("shard_max_count and shard_max_bytes must be positive")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise PreprocessError(f"workers must be >= 1, got {workers}")
    settings = {**asdict(params), "seed": seed, "shard_max_count": shard_max_count,
                "shard_max_bytes": shard_max_bytes, "labels_from_dirs": labels_from_dirs}

    inputs = _resolve_src(src, out, labels_from_dirs)
    _prepare_out(out)
    side = ThreadPoolExecutor(1)  # ffmpeg/ffprobe version strings for the manifest, while the real work runs
    tools = side.submit(tool_versions)
    side.shutdown(wait=False)
    staging = out / ".staging" / split
    staging.parent.mkdir(exist_ok=True)
    with _locked(out / ".staging" / f"{split}.lock", blocking=False):
        fingerprint = _fingerprint(inputs)
        done = _completed(out, split, settings, fingerprint, started)
        if done is not None:
            return done
        _claim_staging(out, staging, split, settings)

        # Plan: label map (merged into the manifest now, so concurrent splits agree), duplicates.
        with _locked(out / ".manifest.lock"):
            manifest = load_manifest(out)
            labels = _label_map(inputs, manifest["label_map"], label_map)
            if labels != manifest["label_map"]:
                manifest["label_map"] = labels
                _save_manifest(out, manifest)
        unique, plan_rejects = _screen(inputs, labels, require_label=labels_from_dirs and src.is_dir())

        # Transcode what has no staged outcome yet.
        todo = [i for i in unique.values() if _load_record(staging, i.key) is None]
        with _progress(progress, total=len(unique), done=len(unique) - len(todo)) as advance:
            _transcode_all(todo, staging, params, workers, advance)

        # Pack.
        records = {key: _load_record(staging, key) for key in unique}
        missing = [unique[k].rel for k, r in records.items() if r is None]
        if missing:  # only if staged files vanished under us
            raise PreprocessError(f"staged results missing for {len(missing)} inputs (e.g. {missing[0]}); rerun the command")
        samples: dict[str, tuple[list[Member], int]] = {}
        rejected = [{"path": rel, "reason": r.reason, "stage": r.stage} for rel, r in plan_rejects]
        for key, record in sorted(records.items()):
            item = unique[key]
            if record["status"] != "ok":
                rejected.append({"path": item.rel, "reason": record["reason"], "stage": record["stage"]})
                continue
            label = labels.get(item.label_name) if item.label_name is not None else None
            for seg in record["segments"]:
                sample_key = Path(seg["file"]).stem
                members = [Member(CODECS[params.codec].ext, path=staging / seg["file"]),
                           Member("json", data=_sample_json(item, seg, params=params, label=label, segments=len(record["segments"])))]
                if label is not None:
                    members.append(Member("cls", data=str(label).encode()))
                samples[sample_key] = (members, seg["frames"])
        rejected.sort(key=lambda r: r["path"])
        items = [PackItem(k, tar_bytes([m.size for m in members])) for k, (members, _) in samples.items()]
        plan = plan_shards(items, seed=seed, max_count=shard_max_count, max_bytes=shard_max_bytes)
        shard_entries = _write_shards(out, split, plan, samples)

        with _locked(out / ".manifest.lock"):
            for stale in [*out.glob(".manifest.json.tmp*"), *out.glob(".rejects.jsonl.tmp*")]:  # from a killed run
                stale.unlink(missing_ok=True)
            manifest = load_manifest(out)
            manifest["splits"][split] = {
                "shards": shard_entries,
                "samples": len(samples),
                "videos": len(unique) - sum(1 for r in records.values() if r["status"] != "ok"),
                "inputs": len(inputs),
                "rejected": len(rejected),
                "frames": sum(e["frames"] for e in shard_entries),
                "bytes": sum(e["bytes"] for e in shard_entries),
                "video_ext": CODECS[params.codec].ext,
                "params": settings,
                "input_fingerprint": fingerprint,
                "tools": tools.result(),
            }
            _save_manifest(out, manifest)
            others = [r for r in _read_rejects(out) if r.get("split") != split]
            mine = [{**r, "split": split} for r in rejected]
            atomic_write(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in others + mine))
        shutil.rmtree(staging, ignore_errors=True)
    return _result_from_manifest(out, split, time.perf_counter() - started)


def _claim_staging(out: Path, staging: Path, split: str, settings: dict) -> None:
    """Reuse an interrupted run's staging folder only if it was made with the same parameters."""
    params_path = staging / "params.json"
    if params_path.exists():
        previous = json.loads(params_path.read_text())
        if previous != settings:
            diff = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
            raise PreprocessError(
                f"an interrupted run left {staging} with different parameters {diff} (old, new); "
                f"rerun with the old parameters, or delete that folder to start over")
        return
    stray = sorted((out / "shards").glob(f"{split}-*.tar"))
    if stray:
        raise PreprocessError(f"OUT holds shards of split {split!r} ({stray[0].name}...) not recorded in its manifest; "
                              f"delete them or use another OUT")
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write(params_path, json.dumps(settings, sort_keys=True))


def _completed(out: Path, split: str, settings: dict, fingerprint: str, started: float) -> BuildResult | None:
    entry = load_manifest(out)["splits"].get(split)
    if entry is None:
        return None
    if entry["params"] != settings:
        diff = {k: (entry["params"].get(k), v) for k, v in settings.items() if entry["params"].get(k) != v}
        raise PreprocessError(f"split {split!r} already exists in {out} with different parameters {diff} (old, new); "
                              f"use another OUT or delete shards/{split}-* and its manifest entry")
    if entry["input_fingerprint"] != fingerprint:
        raise PreprocessError(f"split {split!r} already exists in {out}, built from a different set of inputs; "
                              f"use another OUT or delete shards/{split}-* and its manifest entry")
    missing = [s["tar"] for s in entry["shards"] if not (out / s["tar"]).is_file() or not (out / s["index"]).is_file()]
    if missing:
        raise PreprocessError(f"split {split!r} is recorded in the manifest but {missing[0]} is missing")
    result = _result_from_manifest(out, split, time.perf_counter() - started)
    result.already_complete = True
    return result


def _write_shards(out: Path, split: str, plan: list[list[str]], samples: dict) -> list[dict]:
    shard_dir = out / "shards"
    for stale in shard_dir.glob(f".{split}-*.tmp*"):  # leftovers of a killed run (this split is locked)
        stale.unlink(missing_ok=True)
    entries = []
    for index, keys in enumerate(plan):
        tar_path, idx_path = shard_dir / f"{split}-{index:06d}.tar", shard_dir / f"{split}-{index:06d}.idx"
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
        return [members[0][3].rsplit(".", 1)[0] for members in read_index(idx_path)]
    except (ValueError, IndexError):
        return None


def _result_from_manifest(out: Path, split: str, wall_s: float) -> BuildResult:
    entry = load_manifest(out)["splits"][split]
    rejected = [{k: r[k] for k in ("path", "reason", "stage")} for r in _read_rejects(out) if r.get("split") == split]
    return BuildResult(
        split=split, written=entry["samples"], videos_written=entry["videos"], rejected=rejected,
        inputs=entry["inputs"], shards=[out / s["tar"] for s in entry["shards"]], manifest_path=out / "manifest.json",
        total_frames=entry["frames"], total_bytes=entry["bytes"], wall_s=wall_s,
    )


@contextlib.contextmanager
def _progress(enabled: bool, *, total: int, done: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar over videos (done, videos/s, ETA), or a no-op."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]transcoding"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("transcode", total=total, completed=done, rate="")
        began, start_done = time.perf_counter(), done

        def advance() -> None:
            bar.advance(task)
            finished = bar.tasks[0].completed - start_done
            bar.update(task, rate=f"{finished / max(time.perf_counter() - began, 1e-9):.2f} videos/s")

        yield advance

