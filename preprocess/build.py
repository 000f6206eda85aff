"""``build_shards``: a folder or list of videos in, one split's WebDataset shards out.

The run has three phases, each restartable after a crash (SIGKILL included):

1. **Plan** (:mod:`preprocess.inputs`): list the inputs, give each a key (first 16 hex digits of the
   SHA-1 of its relative path), fix the label map (shared by all splits of OUT, stored in the manifest).
2. **Transcode** (:mod:`preprocess.pool`, parallel over worker processes): each input is re-encoded
   into ``OUT/.staging/{split}/`` and its outcome recorded there atomically and last. A rerun skips
   inputs that already have one.
3. **Pack** (:mod:`preprocess.pack`, parent process, once every input has an outcome): samples are
   shuffled by ``seed`` and cut into shards; each ``.idx``/``.tar`` is published atomically and a
   rerun keeps shards already complete. Finally the manifest and ``rejects.jsonl`` are updated
   (atomically) and the staging folder removed.

Rerunning a finished split with the same inputs and parameters does nothing; with different
parameters or inputs it is refused (delete the split's shards and manifest entry, or use another OUT).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from shardformat import FileLockedError, ManifestError, atomic_write, load_manifest, locked, manifest_lock, save_manifest

from .inputs import Input, PreprocessError, extend_label_map, fingerprint, resolve_src, screen
from .media import CODECS, EncodeParams
from .pack import collect_samples, write_split_shards
from .partition import restrict_to_partition
from .pool import load_outcome, progress_bar, transcode_all


#: Where the per-video work runs: this machine's process pool, or Ray tasks on a cluster.
EXECUTORS = ("local", "ray")


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
    stage_s: dict[str, float] | None = None
    """Wall seconds by stage: ``prepare`` (listing, locks, screening), ``transcode`` (the worker pool: probe,
    ffmpeg, validation), ``pack`` (tars, indexes, manifest, fsyncs); None when nothing was done."""


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
    inputs: list[Input] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    partition: tuple[int, int] | None = None,
) -> BuildResult:
    """Re-encode every video under ``src`` (a folder, or a CSV/TSV list of ``path,label`` rows) and write
    split ``split`` of the shard set in ``out`` (layout: docs/design.md §1; options: docs/preprocess.md).

    ``strict`` only changes the CLI's exit status (non-zero if anything was rejected); the shards are
    the same. ``inputs``, when given, replaces the listing of ``src`` (e.g. one split of an official
    dataset layout, :mod:`preprocess.datasets`); their ``rel`` paths name the samples. Raises
    :class:`PreprocessError` for an unusable SRC/OUT or conflicting parameters.

    ``executor="ray"`` runs the per-video work as Ray tasks (:mod:`preprocess.ray_pool`; ``ray_address``
    None: ``RAY_ADDRESS`` or a local Ray), with the same outputs. ``partition=(I, N)`` keeps only the inputs
    of partition I of N (:mod:`preprocess.partition`), with the label map and input fingerprint of the full listing.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    params, workers = _check_options(split, short_side=short_side, fps=fps, codec=codec, gop=gop, max_frames=max_frames,
                                     min_frames=min_frames, workers=workers, shard_max_count=shard_max_count, shard_max_bytes=shard_max_bytes)
    settings = {**asdict(params), "seed": seed, "shard_max_count": shard_max_count,
                "shard_max_bytes": shard_max_bytes, "labels_from_dirs": labels_from_dirs}
    if executor not in EXECUTORS:
        raise PreprocessError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if partition is not None:
        settings["partition"] = list(partition)  # a rerun as another partition is refused, and --merge checks it
    if inputs is None:
        inputs = resolve_src(src, out, labels_from_dirs=labels_from_dirs)
    elif not inputs:
        raise PreprocessError(f"split {split!r} has no inputs")
    _prepare_out(out)
    tools = _tool_versions_in_background()
    staging = out / ".staging" / split
    with _split_lock(out, split), _manifest_errors():
        input_set = fingerprint(inputs)
        done = _completed(out, split, settings, input_set, started)
        if done is not None:
            return done
        _claim_staging(out, staging, split, settings)
        labels = _update_label_map(out, inputs, label_map)
        unique, plan_rejects = screen(inputs, labels, require_label=labels_from_dirs and src.is_dir())
        part_inputs = inputs
        if partition is not None:  # the label map and fingerprint above came from the full listing
            part_inputs, unique, plan_rejects = restrict_to_partition(inputs, unique, plan_rejects, partition)

        todo = [i for i in unique.values() if load_outcome(staging, i.key) is None]
        marks = {"prepare": time.perf_counter()}
        with progress_bar(progress, total=len(unique), done=len(unique) - len(todo)) as advance:
            if executor == "ray":
                from .ray_pool import transcode_all_ray  # ray is an optional extra

                transcode_all_ray(todo, staging, params, advance, address=ray_address)
            else:
                transcode_all(todo, staging, params, workers, advance)
        marks["transcode"] = time.perf_counter()

        outcomes = {key: load_outcome(staging, key) for key in unique}
        samples, rejected = collect_samples(unique, outcomes, plan_rejects, staging=staging, params=params, labels=labels)
        entries = write_split_shards(out, split, samples, seed=seed, max_count=shard_max_count, max_bytes=shard_max_bytes)
        _publish(out, split, entries, rejected, {
            "samples": len(samples),
            "videos": len(unique) - sum(1 for r in outcomes.values() if r["status"] != "ok"),
            "inputs": len(part_inputs),
            "video_ext": CODECS[params.codec].ext,
            "params": settings,
            "input_fingerprint": input_set,
            "tools": tools.result(),
        })
        shutil.rmtree(staging, ignore_errors=True)
    result = _result_from_manifest(out, split, time.perf_counter() - started)
    marks["pack"] = time.perf_counter()
    ends = [started, *marks.values()]
    result.stage_s = {stage: round(end - begin, 3) for stage, begin, end in zip(marks, ends, ends[1:])}
    return result


# ------------------------------------------------------------------------------------------------ steps


def _check_options(split: str, *, workers: int | None, shard_max_count: int, shard_max_bytes: int, **encode) -> tuple[EncodeParams, int]:
    """The encode parameters and worker count, or a :class:`PreprocessError` naming the bad option."""
    if not split or not all(c.isalnum() or c in "_" for c in split):
        raise PreprocessError(f"split name must be letters, digits or '_' (no '-' or '.'), got {split!r}")
    try:
        params = EncodeParams(**encode)
    except ValueError as err:
        raise PreprocessError(str(err)) from None
    if shard_max_count < 1 or shard_max_bytes < 1:
        raise PreprocessError("shard_max_count and shard_max_bytes must be positive")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise PreprocessError(f"workers must be >= 1, got {workers}")
    return params, workers


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


@contextlib.contextmanager
def _split_lock(out: Path, split: str):
    """One run per split of OUT at a time; a second one is refused at once rather than queued. Once the
    split is complete its lock file is removed (still held, so no other run of it is between taking and
    using it), and ``OUT/.staging`` with it when no other split has files there; an interrupted run leaves
    them for the rerun."""
    path = out / ".staging" / f"{split}.lock"
    with contextlib.ExitStack() as held:
        for attempt in range(3):
            path.parent.mkdir(exist_ok=True)
            try:
                held.enter_context(locked(path, blocking=False))
                break
            except FileNotFoundError:  # another split's run removed the empty OUT/.staging between mkdir and open
                if attempt == 2:
                    raise
            except FileLockedError as err:
                raise PreprocessError(f"another preprocess run holds {err.path}: wait for it to finish") from None
        yield
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


@contextlib.contextmanager
def _manifest_errors():
    """A manifest of OUT that breaks the format is a job-level error (nothing is built)."""
    try:
        yield
    except ManifestError as err:
        raise PreprocessError(str(err)) from None


def _update_label_map(out: Path, inputs, forced: dict[str, int] | None) -> dict[str, int]:
    """Merge this split's labels into OUT's label map now (under the manifest lock), so concurrent
    splits agree on one map."""
    with manifest_lock(out):
        manifest = load_manifest(out)
        labels = extend_label_map(inputs, manifest["label_map"], forced)
        if labels != manifest["label_map"]:
            manifest["label_map"] = labels
            save_manifest(out, manifest)
    return labels


def _publish(out: Path, split: str, entries: list[dict], rejected: list[dict], info: dict) -> None:
    """Record the split's rejects in ``rejects.jsonl``, then the split in the manifest (each atomically).
    The manifest entry is what marks the split complete, so it is written last: a run killed between the
    two writes leaves the split unfinished, and the rerun writes its rejects again (replacing them), where
    the other order left a complete split whose rejects were never recorded."""
    with manifest_lock(out):
        for stale in [*out.glob(".manifest.json.tmp*"), *out.glob(".rejects.jsonl.tmp*")]:  # from a killed run
            stale.unlink(missing_ok=True)
        others = [r for r in _read_rejects(out) if r.get("split") != split]
        mine = [{**r, "split": split} for r in rejected]
        atomic_write(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in others + mine))
        manifest = load_manifest(out)
        manifest["splits"][split] = {
            "shards": entries, "rejected": len(rejected),
            "frames": sum(e["frames"] for e in entries), "bytes": sum(e["bytes"] for e in entries), **info,
        }
        save_manifest(out, manifest)


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


def _completed(out: Path, split: str, settings: dict, input_set: str, started: float) -> BuildResult | None:
    """The split's result if OUT already holds it, built from the same inputs and parameters."""
    entry = load_manifest(out)["splits"].get(split)
    if entry is None:
        return None
    if entry["params"] != settings:
        diff = {k: (entry["params"].get(k), v) for k, v in settings.items() if entry["params"].get(k) != v}
        raise PreprocessError(f"split {split!r} already exists in {out} with different parameters {diff} (old, new); "
                              f"use another OUT or delete shards/{split}-* and its manifest entry")
    if entry["input_fingerprint"] != input_set:
        raise PreprocessError(f"split {split!r} already exists in {out}, built from a different set of inputs; "
                              f"use another OUT or delete shards/{split}-* and its manifest entry")
    missing = [s["tar"] for s in entry["shards"] if not (out / s["tar"]).is_file() or not (out / s["index"]).is_file()]
    if missing:
        raise PreprocessError(f"split {split!r} is recorded in the manifest but {missing[0]} is missing")
    result = _result_from_manifest(out, split, time.perf_counter() - started)
    result.already_complete = True
    return result


def _read_rejects(out: Path) -> list[dict]:
    path = out / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _result_from_manifest(out: Path, split: str, wall_s: float) -> BuildResult:
    entry = load_manifest(out)["splits"][split]
    rejected = [{k: r[k] for k in ("path", "reason", "stage")} for r in _read_rejects(out) if r.get("split") == split]
    return BuildResult(
        split=split, written=entry["samples"], videos_written=entry["videos"], rejected=rejected,
        inputs=entry["inputs"], shards=[out / s["tar"] for s in entry["shards"]], manifest_path=out / "manifest.json",
        total_frames=entry["frames"], total_bytes=entry["bytes"], wall_s=wall_s,
    )


# ------------------------------------------------------------------------------------------- provenance


def tool_versions() -> dict:
    """ffmpeg/PyAV-FFmpeg versions, Python and the packages that shape the output, for the manifest."""
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

    # at the lowest CPU priority: it runs beside the pool's start-up and first transcodes, and ffmpeg's own
    # start-up (about 0.1 s of CPU, more under load) is CPU they need more; it is read only at the end
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    return {"ffmpeg": first_line([*nice, "ffmpeg", "-version"]),
            "pyav_ffmpeg": getattr(av, "ffmpeg_version_info", "unknown"),
            "python": platform.python_version(), "packages": packages}


def _tool_versions_in_background() -> Future:
    """Start :func:`tool_versions` on a side thread (an ffmpeg subprocess) while the real work runs."""
    side = ThreadPoolExecutor(1)
    future = side.submit(tool_versions)
    side.shutdown(wait=False)
    return future
