"""The GPU check: one prepared run that makes the first GPU it meets produce numbers (docs/gpu.md "The GPU check").

    bash .device/run.sh                                  # on the GPU machine, from the offline bundle
    python device/check.py --bundle .device              # the same check where everything is installed already
    python device/check.py --bundle .device --stand-in   # the CUDA rows' code on the CPU at toy sizes (for tests)

Every row runs under its own time budget and the whole run under ``--budget`` seconds (default 380: with the
install before it, ``run.sh`` stays under 7 minutes on one H100 with the DALI rows). A row prints its line as soon as it ends and is
written to ``$OUT/gpu_check.json`` (``OUT`` unset: ``.device/out/``) at once, so a run cut short still leaves
every row it finished: ``{"rows": [{"name", "status": "ok"|"failed"|"skipped", "reason", "metrics", "summary",
"seconds"}], "env": {...}}``. A row that cannot run says why (``no CUDA``, ``DALI not installed: ...``). The
first row is the environment; a driver or torch that cannot run the rest is its one line, and the run ends.
Exit status: 1 when a row failed, else 0.

Rows, in the order they run (CUDA rows are skipped without a GPU):

* ``env``, ``bundle``, ``shards``, ``routing``, ``dali_cpu``, ``model_cpu``: the machine, the bundle's install,
  reading every shard set, the decode path each set gets on a GPU, DALI's CPU decoder, one CPU training step;
* ``matmul_bf16``: the GPU's measured bf16 matmul rate (the model rows' yardstick);
* ``identity_vp9``, ``identity_h264``: DALI ``mixed`` returns exactly the frames drawn, every speed both ways;
* ``pixel_agreement``: DALI ``mixed`` against the CPU decode (PyAV, the reference backend's converter) of
  the same frames of colour test video, max abs difference and PSNR per frame;
* ``mjpeg_routing``, ``nvdec_min_size``: sets the mixed decoder cannot take run on a host path, frame-exact;
* ``loader_dali_gpu``, ``loader_reference``: loader clips/s on 300-frame videos, and the frames DALI decodes
  per returned frame next to a seeking decoder's; ``decode_threads``: clips/s at 1, 2 and 3 threads per NVDEC;
* ``train_reference``, ``eval_gpu``, ``kill_resume``, ``pretrain_dali``: train.py on the GPU (reference loader
  with CUDA-stream prefetch; evaluation; SIGKILL mid-run and resume; 60 s of R(2+1)D-18 bf16 on the DALI loader);
* ``model_ARCH_NORM`` and ``compile_ARCH_NORM``: C3D, R3D-18, R(2+1)D-18 with BN and TGN, forward+backward in
  bf16 at batch 32 x 16x112x112: ms per step eager and compiled, peak memory, fraction of the matmul rate.

Runs on torch 2.11 (the GPU machine's) as on the pinned 2.13: nothing newer than torch 2.1's API is used here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from device.layout import BUNDLE, INSTALLED, OUT, SETS, SHARDS, SITE  # noqa: E402
from shardformat.files import atomic_write  # noqa: E402

ARCHS = ("c3d", "r3d_18", "r2plus1d_18")
SPEEDS = (-8, -4, -2, -1, 1, 2, 4, 8)
#: Lowest PSNR (dB), over the flat parts of a frame, of DALI ``mixed`` against the CPU decode that passes. Two correct
#: YUV->RGB conversions differ there by rounding only (DALI's CPU decoder against PyAV: at most 3 levels, PSNR
#: above 45 dB); a BT.601/BT.709 matrix mix-up or a limited/full range error moves every saturated colour by tens
#: of levels (tests/test_device_check.py measures both). At sharp colour edges, chroma upsampling differs between
#: correct converters by up to ~190 levels on this test video, so whole frames are reported, not judged.
PSNR_FLOOR = 35.0
#: A pixel is "flat" when no pixel within 2 of it differs from its neighbour by more than this many levels.
FLAT_GRADIENT = 6


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of the work each row does: the real ones, or toy ones for ``--stand-in`` (CPU)."""

    model_batch: int = 32
    model_frames: int = 16
    model_size: int = 112
    model_width: int = 64
    model_warmup: int = 3
    model_steps: int = 10
    matmul_n: int = 8192
    batch: int = 8
    """Samples per loader/training batch (each holds 4 clips of 16 frames)."""
    frames: int = 16
    resize: int = 128
    crop: int = 112
    arch: str = "r2plus1d_18"
    width: int = 64
    cut_workers: int = 4
    ref_workers: int = 14
    loader_seconds: float = 10.0
    train_steps: int = 40
    pretrain_seconds: float = 60.0
    train_device: str = "cuda"


GPU = Profile()
STAND_IN = Profile(model_batch=2, model_frames=8, model_size=32, model_width=4, model_warmup=1, model_steps=2, matmul_n=128,
                   batch=2, frames=8, resize=32, crop=28, arch="c3d", width=4, cut_workers=1, ref_workers=1,
                   loader_seconds=2.0, train_steps=4, pretrain_seconds=15.0, train_device="cpu")


class Skip(Exception):
    """A row that cannot run here, and why."""


class OverBudget(BaseException):
    """Raised in the main thread when a row's budget is spent (a BaseException: the library's ``except
    Exception`` blocks must not swallow it)."""


@dataclasses.dataclass
class Result:
    ok: bool
    summary: str
    metrics: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
    bundle: Path
    out: Path
    work: Path
    profile: Profile
    stand_in: bool
    cuda: bool = False
    dali: str | None = None
    """DALI's version when it imports, else None (``dali_missing`` says why)."""
    dali_missing: str = "not checked"
    nvdec: dict | None = None
    nvdec_engines: int | None = None
    matmul_tflops: float | None = None
    checkpoint: Path | None = None
    stop: bool = False
    env: dict = dataclasses.field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.cuda else "cpu")

    def shards(self, name: str) -> Path:
        return self.bundle / SHARDS / name

    @property
    def gpu_decode_threads(self) -> int:
        """0 (derived from the GPU, the default) when the NVDEC query worked here, else the old constant 12."""
        return 0 if self.nvdec_engines else 12


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    budget: float
    """Seconds the row may take (also capped by what is left of the run's budget)."""
    fn: Callable[[Context], Result]
    cuda: bool = False
    """Needs CUDA (with ``--stand-in``: runs on the CPU at toy sizes instead)."""
    dali: bool = False
    """Needs DALI."""
    stand_in: bool = True
    """Runs with ``--stand-in`` (False: it measures what only a GPU has)."""


class Report:
    """Rows as they end: a printed line each, and ``gpu_check.json`` rewritten whole (atomically) after each."""

    def __init__(self, path: Path):
        self.path, self.rows, self.env = path, [], {}
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, status: str, *, reason: str = "", summary: str = "", metrics: dict | None = None, seconds: float = 0.0):
        self.rows.append({"name": name, "status": status, "reason": reason, "summary": summary,
                          "metrics": _plain(metrics or {}), "seconds": round(seconds, 1)})
        text = summary if status == "ok" else f"{reason}{' | ' + summary if summary else ''}"
        print(f"{status:7s} {name:24s} {text} [{seconds:.0f} s]", flush=True)
        self.write()

    def write(self):
        atomic_write(self.path, json.dumps({"rows": self.rows, "env": _plain(self.env)}, indent=2) + "\n")

    @property
    def failed(self) -> bool:
        return any(r["status"] == "failed" for r in self.rows)


def _plain(value):
    """JSON-safe copy (numpy scalars, tuples, paths, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else round(float(value), 4)
    if isinstance(value, Path):
        return str(value)
    return value


@contextlib.contextmanager
def budget(seconds: float):
    """Raise :class:`OverBudget` in the main thread after ``seconds`` (SIGALRM)."""
    def expire(signum, frame):
        raise OverBudget()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_rows(rows: list[Row], ctx: Context, report: Report, *, total: float) -> None:
    deadline = time.monotonic() + total
    for row in rows:
        left = deadline - time.monotonic()
        if ctx.stop:
            report.add(row.name, "skipped", reason="the environment cannot run it (see env)")
            continue
        if row.cuda and not ctx.cuda and not ctx.stand_in:
            report.add(row.name, "skipped", reason="no CUDA")
            continue
        if ctx.stand_in and not row.stand_in:
            report.add(row.name, "skipped", reason="stand-in: measures what only a GPU has")
            continue
        if row.dali and ctx.dali is None:
            report.add(row.name, "skipped", reason=f"DALI not installed: {ctx.dali_missing}")
            continue
        if left < min(row.budget, 15):
            report.add(row.name, "skipped", reason=f"run budget spent ({max(left, 0):.0f} s left of {total:.0f})")
            continue
        started = time.monotonic()
        try:
            with budget(min(row.budget, left)):
                result = row.fn(ctx)
            report.add(row.name, "ok" if result.ok else "failed", reason="" if result.ok else "check not met",
                       summary=result.summary, metrics=result.metrics, seconds=time.monotonic() - started)
        except Skip as e:
            report.add(row.name, "skipped", reason=str(e), seconds=time.monotonic() - started)
        except OverBudget:
            report.add(row.name, "failed", reason=f"over its budget of {min(row.budget, left):.0f} s", seconds=time.monotonic() - started)
        except Exception as e:  # noqa: BLE001 -- a row's failure is reported; the next rows still run
            traceback.print_exc(file=sys.stderr)
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            report.add(row.name, "failed", reason=f"{type(e).__name__}: {first}", seconds=time.monotonic() - started)
        finally:
            _free(ctx)
        report.env = ctx.env


def _free(ctx: Context) -> None:
    """Memory back between rows; a GPU left broken by a row is reported by the next rows, not here."""
    import gc

    gc.collect()
    if ctx.cuda:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            print(f"gpu_check: after the row, the GPU reports {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  file=sys.stderr, flush=True)


def _sync(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


# ---------------------------------------------------------------- CPU rows
def row_env(ctx: Context) -> Result:
    env = ctx.env
    env.update(python=platform.python_version(), platform=platform.platform(), cpus=len(os.sched_getaffinity(0)),
               torch=torch.__version__, torch_cuda=torch.version.cuda, driver_cuda=_driver_cuda())
    smi = _nvidia_smi()
    env.update(smi or {})
    try:
        import nvidia.dali

        ctx.dali, ctx.dali_missing = nvidia.dali.__version__, ""
    except ImportError as e:
        ctx.dali_missing = f"import failed: {e}"
    env["dali"] = ctx.dali or f"not installed ({ctx.dali_missing})"
    if not torch.cuda.is_available():
        if (smi is not None or _device_nodes()) and not ctx.stand_in:
            ctx.stop = True
            try:
                torch.cuda.init()
                why = "torch.cuda.is_available() is False"
            except Exception as e:  # noqa: BLE001 -- its message is the one line to print
                why = str(e).strip().splitlines()[0]
            return Result(False, f"GPU {env.get('gpu', '?')} (driver {env.get('driver', '?')}) is not usable by torch "
                                 f"{torch.__version__} (CUDA {torch.version.cuda}): {why}")
        return Result(True, f"no GPU: CUDA rows {'run on the CPU at toy sizes (stand-in)' if ctx.stand_in else 'skipped'}; "
                            f"Python {env['python']}, torch {env['torch']}, DALI {env['dali']}, {env['cpus']} CPUs", dict(env))
    props = torch.cuda.get_device_properties(0)
    env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
               gpu_memory_gib=round(props.total_memory / 2**30, 1))
    try:  # one kernel: a torch without kernels for this GPU's architecture fails here, not in every row
        value = torch.arange(1024, device="cuda", dtype=torch.float32).sum().item()
        assert value == 1023 * 1024 / 2
    except Exception as e:  # noqa: BLE001
        ctx.stop = True
        return Result(False, f"torch {torch.__version__} cannot run a kernel on {props.name}: {str(e).splitlines()[0]}")
    ctx.cuda = True
    try:
        from pipeline.dali.nvdec import decoder_caps

        caps = decoder_caps(["h264", "hevc", "vp9", "av1", "mjpeg"], 0)
        ctx.nvdec = {c: dataclasses.asdict(v) for c, v in caps.items()}
        ctx.nvdec_engines = min(v.engines for c, v in caps.items() if c in ("h264", "vp9") and v.supported) or None
        env["nvdec"] = ctx.nvdec
    except Exception as e:  # noqa: BLE001 -- reported; the loader rows then pass an explicit thread count
        env["nvdec_error"] = f"{type(e).__name__}: {e}"
    return Result(True, f"{props.name} (sm {props.major}.{props.minor}, {env['gpu_memory_gib']} GiB), driver {env.get('driver', '?')} "
                        f"(CUDA {env['driver_cuda']}), torch {torch.__version__} (CUDA {torch.version.cuda}), DALI {env['dali']}, "
                        f"Python {env['python']}, {env['cpus']} CPUs, "
                        f"NVDEC engines {ctx.nvdec_engines if ctx.nvdec_engines else env.get('nvdec_error', '?')}", dict(env))


def _driver_cuda() -> str | None:
    """The CUDA version the driver supports (``cuDriverGetVersion``), e.g. ``13.0``; None without a driver."""
    import ctypes

    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except OSError:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _device_nodes() -> bool:
    """Whether the kernel shows an NVIDIA GPU (``/dev/nvidia0``), whatever nvidia-smi and torch say."""
    return Path("/dev/nvidia0").exists()


def _nvidia_smi() -> dict | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    name, driver, memory = [s.strip() for s in out.stdout.strip().splitlines()[0].split(",")]
    return {"gpu": name, "driver": driver, "gpu_memory": memory}


def row_bundle(ctx: Context) -> Result:
    stamp_path = ctx.bundle / SITE / INSTALLED
    metrics = {}
    try:
        import av

        metrics["av"] = av.__version__
        metrics["av_from"] = str(Path(av.__file__).parent)
    except ImportError as e:
        metrics["av"] = f"not importable: {e}"
    if ctx.dali is not None:
        import nvidia.dali

        metrics["dali"] = ctx.dali
        metrics["dali_from"] = str(Path(nvidia.dali.__file__).parent)
    ctx.env["av"] = metrics.get("av")
    if not stamp_path.is_file():
        raise Skip(f"not run from an installed bundle (no {stamp_path.relative_to(ctx.bundle.parent)}); av {metrics['av']}, DALI {ctx.dali}")
    stamp = json.loads(stamp_path.read_text())
    metrics["installed"] = stamp
    if ctx.dali is None and stamp.get("dali_missing"):
        ctx.dali_missing = stamp["dali_missing"]  # why the install left it out says more than the ImportError
        ctx.env["dali"] = f"not installed ({ctx.dali_missing})"
    site = str((ctx.bundle / SITE).resolve())
    from_bundle = metrics.get("av_from", "").startswith(site) and (ctx.dali is None or metrics["dali_from"].startswith(site))
    ok = from_bundle and "not importable" not in str(metrics["av"])
    return Result(ok, f"{len(stamp['wheels'])} wheels by {stamp['method']} in {stamp['seconds']} s; av {metrics['av']}, "
                      f"DALI {ctx.dali or 'not installed: ' + ctx.dali_missing}" + ("" if from_bundle else "; NOT imported from the bundle"), metrics)


def row_shards(ctx: Context) -> Result:
    from pipeline import LoaderConfig, build_loader, list_shards
    from pipeline.io.shard_reader import scan_shards

    metrics = {}
    for name in SETS:
        splits = json.loads((ctx.shards(name) / "manifest.json").read_text())["splits"]
        for split in splits:
            records, bad = scan_shards(list_shards(ctx.shards(name), split=split))
            metrics[f"{name}/{split}"] = {"samples": len(records), "bad": len(bad), "frames": sum(r.video_frames for r in records),
                                          "codecs": sorted({r.meta["codec"] for r in records}),
                                          "sizes": sorted({f"{r.meta['width']}x{r.meta['height']}" for r in records})}
    cfg = LoaderConfig(mode="pretrain", num_frames=8, speeds=SPEEDS, num_clips=4, batch_size=2, resize=64, crop_size=64, augment=False)
    loader = build_loader(list_shards(ctx.shards("vp9")), cfg, backend="reference", num_workers=0, device="cpu", normalized=False)
    checked, wrong = _frame_identity(loader, epochs=1)
    metrics["vp9_reference_frames"] = {"checked": checked, "wrong": wrong}
    ok = all(m["samples"] > 0 and m["bad"] == 0 for k, m in metrics.items() if "/" in k) and checked > 0 and wrong == 0
    sets = ", ".join(f"{k} {m['samples']}" for k, m in metrics.items() if "/" in k)
    return Result(ok, f"samples per set/split: {sets}; reference (PyAV) reads {checked} numbered VP9 frames, {wrong} wrong", metrics)


def _frame_identity(loader, *, epochs: int, speeds: set | None = None) -> tuple[int, int]:
    """(frames checked, frames whose drawn number differs from ``frame_indices``) over ``epochs`` of a loader of
    uint8 clips (B, K, T, S, S, 3) of frame-numbered video; ``speeds`` collects the clips' speeds."""
    from synthetic.videos import read_frame_index

    checked = wrong = 0
    speeds = set() if speeds is None else speeds
    try:
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            for batch in loader:
                clips = batch["clips"].cpu().numpy()
                drawn = np.array([read_frame_index(f) for f in clips.reshape(-1, *clips.shape[-3:])]).reshape(clips.shape[:3])
                checked += drawn.size
                wrong += int((drawn != batch["frame_indices"].numpy()).sum())
                speeds.update(batch["speeds"].flatten().tolist())
    finally:
        loader.close()
    return checked, wrong


#: The path each set must get on a GPU machine: (``--backend auto``, ``--backend dali``).
EXPECTED_ROUTES = {"vp9": ("dali-gpu", "dali-gpu"), "h264": ("dali-gpu", "dali-gpu"), "mjpeg": ("reference", "dali-cpu"),
                   "small": ("reference", "dali-cpu"), "motion": ("dali-gpu", "dali-gpu"), "colour": ("dali-gpu", "dali-gpu")}


def row_routing(ctx: Context) -> Result:
    from pipeline import list_shards
    from pipeline.io.shard_reader import scan_shards
    from pipeline.loader import smallest_sizes
    from pipeline.routing import choose_backend

    metrics, wrong = {}, []
    for name, expected in EXPECTED_ROUTES.items():
        splits = json.loads((ctx.shards(name) / "manifest.json").read_text())["splits"]
        records = [r for split in splits for r in scan_shards(list_shards(ctx.shards(name), split=split))[0]]
        codecs = {r.meta["codec"] for r in records}
        routes = [choose_backend(b, codecs, cuda=True, smallest=smallest_sizes(records)) for b in ("auto", "dali")]
        metrics[name] = {"auto": routes[0].backend, "dali": routes[1].backend, "reason": routes[0].reason}
        if tuple(r.backend for r in routes) != expected:
            wrong.append(f"{name}: {[r.backend for r in routes]} (expected {list(expected)})")
    summary = "; ".join(f"{n} -> {m['auto']}" + (f" ({m['reason']})" if m["reason"] else "") for n, m in metrics.items())
    return Result(not wrong, ("WRONG: " + "; ".join(wrong) + " | " if wrong else "") + summary, metrics)


def row_dali_cpu(ctx: Context) -> Result:
    """DALI's CPU decoder on a cut stream of the bundled VP9: the DALI install works, whatever the GPU does."""
    from pipeline import list_shards
    from pipeline.dali.stream import build_decode_pipeline
    from pipeline.dali.stream_cut import cut_stream
    from pipeline.io.shard_reader import scan_shards
    from synthetic.videos import read_frame_index

    record = scan_shards(list_shards(ctx.shards("vp9")))[0][0]
    wanted = [0, 5, 17, 40, 121, 299]
    cut = cut_stream(record, record.read_video(), wanted, witness=True)
    pipe = build_decode_pipeline(batch_size=1, num_threads=1, device_id=None)
    pipe.feed_input("encoded", [cut.data])
    pipe.feed_input("frame_indices", [cut.frames_to_request])
    pipe.schedule_run()
    frames = np.array(pipe.outputs()[0][0])
    got = [read_frame_index(f) for f in frames[: len(wanted)]]
    witness = bool(np.array_equal(frames[cut.witness[0]], frames[cut.witness[1]]))
    return Result(got == wanted and witness, f"DALI {ctx.dali} CPU decoder: frames {got} for {wanted}, witness {'equal' if witness else 'DIFFERS'}",
                  {"got": got, "wanted": wanted, "witness_equal": witness})


def row_model_cpu(ctx: Context) -> Result:
    from model import build_backbone

    torch.manual_seed(0)
    model = build_backbone("r3d_18", base_width=4)
    x = torch.randn(2, 3, 8, 32, 32)
    started = time.perf_counter()
    loss = model(x).float().square().mean()
    loss.backward()
    seconds = time.perf_counter() - started
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    ok = math.isfinite(loss.item()) and all(g is not None and torch.isfinite(g).all() for g in grads)
    return Result(ok, f"R3D-18 (width 4) forward+backward on 2x8x32x32: loss {loss.item():.4f}, {len(grads)} gradients finite, {seconds * 1e3:.0f} ms",
                  {"loss": loss.item(), "ms": seconds * 1e3})


# ---------------------------------------------------------------- GPU rows: the models
def row_matmul(ctx: Context) -> Result:
    n, dtype = ctx.profile.matmul_n, torch.bfloat16 if ctx.cuda else torch.float32
    a = torch.randn(n, n, device=ctx.device, dtype=dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=dtype)
    for _ in range(3):
        a @ b
    iters = 20
    seconds = _timed(ctx, lambda: [a @ b for _ in range(iters)])
    tflops = 2 * n**3 * iters / seconds / 1e12
    ctx.matmul_tflops = tflops
    return Result(tflops > 0, f"{n}x{n} {dtype} matmul: {tflops:.1f} TFLOP/s", {"tflops": tflops, "n": n})


def _timed(ctx: Context, fn) -> float:
    """Seconds ``fn`` takes on the device (CUDA events around it, or the wall clock on the CPU)."""
    if not ctx.cuda:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def _model_and_input(ctx: Context, arch: str, norm: str):
    from model import build_backbone

    p = ctx.profile
    torch.manual_seed(0)
    model = build_backbone(arch, base_width=p.model_width, norm=norm).to(ctx.device).train()
    x = torch.randn(p.model_batch, 3, p.model_frames, p.model_size, p.model_size, device=ctx.device)
    if ctx.cuda and norm == "bn":  # train.py's layout on a GPU: channels-last-3d except for TGN (use_channels_last)
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return model, x


def _step(ctx: Context, model, x) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cuda):
        loss = model(x).float().square().mean()
    loss.backward()


def _measure_steps(ctx: Context, model, x) -> dict:
    p = ctx.profile
    for _ in range(p.model_warmup):
        _step(ctx, model, x)
    _sync(ctx)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = _timed(ctx, lambda: [_step(ctx, model, x) for _ in range(p.model_steps)])
    return {"ms_per_step": seconds / p.model_steps * 1e3,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None}


def _step_flops(ctx: Context, model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _step(ctx, model, x)
    return float(counter.get_total_flops())


def _model_summary(ctx: Context, arch: str, norm: str, m: dict, flops: float, extra: str = "") -> Result:
    p = ctx.profile
    rate = flops / (m["ms_per_step"] / 1e3) / 1e12
    m.update(tflops=rate, gflops_per_step=flops / 1e9)
    if ctx.matmul_tflops:
        m["fraction_of_matmul"] = rate / ctx.matmul_tflops
    memory = f", peak {m['peak_memory_gib']:.1f} GiB" if m.get("peak_memory_gib") is not None else ""
    fraction = f" = {m['fraction_of_matmul']:.0%} of the matmul rate" if "fraction_of_matmul" in m else ""
    return Result(math.isfinite(m["ms_per_step"]), f"{arch} {norm} batch {p.model_batch}x{p.model_frames}x{p.model_size}x{p.model_size}"
                                                   f"{' bf16' if ctx.cuda else ''}: {m['ms_per_step']:.1f} ms/step{extra}{memory}, "
                                                   f"{rate:.1f} TFLOP/s{fraction}", m)


def model_row(arch: str, norm: str) -> Callable[[Context], Result]:
    def row(ctx: Context) -> Result:
        if ctx.cuda:
            torch.backends.cudnn.benchmark = True  # as train.py on a GPU
        model, x = _model_and_input(ctx, arch, norm)
        m = _measure_steps(ctx, model, x)
        return _model_summary(ctx, arch, norm, m, _step_flops(ctx, model, x))
    return row


def compile_row(arch: str, norm: str) -> Callable[[Context], Result]:
    def row(ctx: Context) -> Result:
        import torch._dynamo

        if ctx.cuda:
            torch.backends.cudnn.benchmark = True
        model, x = _model_and_input(ctx, arch, norm)
        flops = _step_flops(ctx, model, x)
        compiled = torch.compile(model)
        try:
            started = time.perf_counter()
            _step(ctx, compiled, x)  # compiles the forward and the backward
            _sync(ctx)
            compile_s = time.perf_counter() - started
            m = _measure_steps(ctx, compiled, x)
        finally:
            torch._dynamo.reset()
        m["compile_s"] = compile_s
        return _model_summary(ctx, arch, norm, m, flops, extra=f" compiled (compiling took {compile_s:.0f} s)")
    return row


# ---------------------------------------------------------------- GPU rows: DALI mixed and the loaders
def _raw_config(batch_size: int = 2):
    from pipeline import LoaderConfig

    return LoaderConfig(mode="pretrain", num_frames=16, speeds=SPEEDS, num_clips=4, batch_size=batch_size, resize=128, crop_size=128, augment=False)


def _dali_backend(ctx: Context) -> str:
    return "dali-gpu" if ctx.cuda else "dali-cpu"


def identity_row(name: str) -> Callable[[Context], Result]:
    def row(ctx: Context) -> Result:
        from pipeline import build_loader, list_shards

        loader = build_loader(list_shards(ctx.shards(name)), _raw_config(), backend="dali", device=ctx.device,
                              num_workers=ctx.profile.cut_workers, gpu_decode_threads=ctx.gpu_decode_threads, normalized=False)
        backend, threads, speeds = loader.backend, loader.decode_threads, set()
        stream = loader._stream
        checked, wrong = _frame_identity(loader, epochs=3, speeds=speeds)
        ok = backend == _dali_backend(ctx) and checked > 0 and wrong == 0 and loader.stats["skipped"] == 0 and speeds == set(SPEEDS)
        return Result(ok, f"backend {backend} ({threads} decode threads), {checked} frames checked at speeds {sorted(speeds)}, {wrong} wrong, "
                          f"{stream.witness_frames} witnesses equal", {"backend": backend, "checked": checked, "wrong": wrong,
                                                                      "decode_threads": threads, "witnesses": stream.witness_frames})
    return row


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 arrays of the same shape (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else 0.0
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def flat_mask(image: np.ndarray, *, gradient: int = FLAT_GRADIENT, radius: int = 2) -> np.ndarray:
    """(H, W) bool: pixels of an (H, W, 3) uint8 image with no step above ``gradient`` levels within ``radius``."""
    x = image.astype(np.int16)
    step = np.zeros(x.shape[:2], np.int16)
    step[1:] = np.maximum(step[1:], np.abs(np.diff(x, axis=0)).max(2))
    step[:, 1:] = np.maximum(step[:, 1:], np.abs(np.diff(x, axis=1)).max(2))
    near = step.copy()  # the largest step within ``radius`` (a square window), by shifting
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = np.zeros_like(step)
            shifted[max(dy, 0): step.shape[0] + min(dy, 0), max(dx, 0): step.shape[1] + min(dx, 0)] = \
                step[max(-dy, 0): step.shape[0] + min(-dy, 0), max(-dx, 0): step.shape[1] + min(-dx, 0)]
            near = np.maximum(near, shifted)
    return near <= gradient


def agreement(got: np.ndarray, want: np.ndarray) -> dict:
    """How a decoded frame agrees with the reference decode of it: whole frame and its flat parts (see PSNR_FLOOR)."""
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    flat = flat_mask(want)
    return {"psnr_db": psnr(got, want), "max_abs": int(diff.max()), "flat_psnr_db": psnr(got[flat], want[flat]),
            "flat_max_abs": int(diff[flat].max()) if flat.any() else 0, "flat_fraction": float(flat.mean())}


def cpu_frames(data: bytes, wanted: list[int]) -> dict[int, np.ndarray]:
    """Frames ``wanted`` (presentation order) of an encoded video, decoded by PyAV and converted to RGB by the
    reference backend's converter (``pipeline.reference.decode.rgb_view``)."""
    import av

    from pipeline.reference.decode import rgb_view

    found = {}
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                found[i] = rgb_view(frame).copy()
            if len(found) == len(wanted):
                break
    return found


def dali_frames(ctx: Context, record, wanted: list[int]) -> np.ndarray:
    """Frames ``wanted`` of ``record`` decoded by DALI (``mixed`` on a GPU, else its CPU decoder) from the cut
    stream the loader feeds it; raises if the witness frames differ."""
    from pipeline.dali.stream import build_decode_pipeline
    from pipeline.dali.stream_cut import cut_stream

    cut = cut_stream(record, record.read_video(), wanted, witness=True)
    pipe = build_decode_pipeline(batch_size=1, num_threads=1, device_id=0 if ctx.cuda else None)
    pipe.feed_input("encoded", [cut.data])
    pipe.feed_input("frame_indices", [cut.frames_to_request])
    pipe.schedule_run()
    (out,) = pipe.outputs()
    frames = np.array((out.as_cpu() if ctx.cuda else out)[0])
    if cut.witness is not None and not np.array_equal(frames[cut.witness[0]], frames[cut.witness[1]]):
        raise RuntimeError(f"{record.key}: the witness frames differ")
    return frames[: len(wanted)]


def row_pixel_agreement(ctx: Context) -> Result:
    from pipeline import list_shards
    from pipeline.io.shard_reader import scan_shards

    wanted = [0, 7, 20, 33, 47, 63]
    frames, worst = {}, {"psnr_db": math.inf, "max_abs": 0, "flat_psnr_db": math.inf, "flat_max_abs": 0}
    for split in ("vp9", "h264") if ctx.cuda else ("vp9",):  # DALI's CPU decoder has no H.264
        for record in scan_shards(list_shards(ctx.shards("colour"), split=split))[0]:
            got = dali_frames(ctx, record, wanted)
            want = cpu_frames(record.read_video(), wanted)
            per_frame = [{"frame": f, **agreement(got[i], want[f])} for i, f in enumerate(wanted)]
            frames[f"{split}/{record.meta['source']}"] = per_frame
            for m in per_frame:
                for key, pick in (("psnr_db", min), ("max_abs", max), ("flat_psnr_db", min), ("flat_max_abs", max)):
                    worst[key] = pick(worst[key], m[key])
    ok = worst["flat_psnr_db"] >= PSNR_FLOOR
    return Result(ok, f"DALI {'mixed' if ctx.cuda else 'CPU'} vs PyAV on colour test video ({', '.join(frames)}): flat parts lowest PSNR "
                      f"{worst['flat_psnr_db']:.1f} dB (floor {PSNR_FLOOR:.0f}), largest difference {worst['flat_max_abs']}; whole frames "
                      f"lowest PSNR {worst['psnr_db']:.1f} dB, largest difference {worst['max_abs']} (chroma at colour edges)",
                  {"frames": frames, **{f"worst_{k}": v for k, v in worst.items()}, "floor_db": PSNR_FLOOR})


def host_path_row(name: str, backend: str, expected: str, words: str) -> Callable[[Context], Result]:
    """A set the mixed decoder cannot take: routed to ``expected`` on a GPU (the reason names ``words``), frame-exact."""
    def row(ctx: Context) -> Result:
        from pipeline import build_loader, list_shards
        from pipeline.routing import NVDEC_MIN_SIZE

        cfg = _raw_config()
        if name == "small":
            cfg = dataclasses.replace(cfg, resize=96, crop_size=96)
        loader = build_loader(list_shards(ctx.shards(name)), cfg, backend=backend, device=ctx.device, num_workers=2, normalized=False)
        route, reason = loader.backend, loader.route_reason
        checked, wrong = _frame_identity(loader, epochs=1)
        metrics = {"backend": route, "reason": reason, "checked": checked, "wrong": wrong}
        ok = checked > 0 and wrong == 0
        if ctx.cuda:
            ok = ok and route == expected and words in reason
        if name == "small" and ctx.nvdec:  # our limits must be at least the GPU's own
            reported = {c: tuple(v["min_size"]) for c, v in ctx.nvdec.items() if c in NVDEC_MIN_SIZE}
            looser = {c: s for c, s in reported.items() if s[0] > NVDEC_MIN_SIZE[c][0] or s[1] > NVDEC_MIN_SIZE[c][1]}
            metrics.update(gpu_reported_min=reported, routing_min={c: NVDEC_MIN_SIZE[c] for c in reported}, routing_looser_than_gpu=looser)
            ok = ok and not looser
            reason += f"; the GPU reports minimums {reported}" + (f", ABOVE routing's for {sorted(looser)}" if looser else "")
        return Result(ok, f"backend {route} ({reason or 'as asked'}), {checked} frames checked, {wrong} wrong", metrics)
    return row


def _pretext_config(ctx: Context):
    from pipeline import LoaderConfig

    p = ctx.profile
    return LoaderConfig(mode="pretrain", num_frames=p.frames, speeds=SPEEDS, num_clips=4, batch_size=p.batch, resize=p.resize, crop_size=p.crop)


def loader_rate(ctx: Context, backend: str, *, workers: int, seconds: float, gpu_decode_threads: int | None = None) -> dict:
    """clips/s of a loader over the motion set's train split for ``seconds`` after its first batch (which holds
    its start: DALI pipeline build, worker start), epochs one after another; and how many frames DALI decoded
    per returned frame next to a seeking decoder's."""
    from pipeline import build_loader, list_shards
    from pipeline.dali.stream_cut import _runs
    from pipeline.io.shard_reader import scan_shards

    shards = list_shards(ctx.shards("motion"), split="train")
    cfg = _pretext_config(ctx)
    threads = ctx.gpu_decode_threads if gpu_decode_threads is None else gpu_decode_threads
    loader = build_loader(shards, cfg, backend=backend, device=ctx.device, num_workers=workers, gpu_decode_threads=threads, reuse_host_memory=True)
    records = {r.key: r for r in scan_shards(shards)[0]}
    clips = seeking = returned = 0
    started = None
    try:
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            for batch in loader:
                if started is None:
                    _sync(ctx)
                    started = time.perf_counter()
                    continue
                clips += batch["clips"].shape[0] * batch["clips"].shape[1]
                for key, frames in zip(batch["key"], batch["frame_indices"].numpy()):
                    keyframes = np.arange(0, records[key].video_frames, records[key].meta.get("gop") or 16)
                    seeking += sum(e - s + 1 for s, e in _runs(np.unique(frames), keyframes))
                    returned += frames.size
                if time.perf_counter() - started >= seconds:
                    break
            else:
                epoch += 1
                continue
            break
        _sync(ctx)
        elapsed = time.perf_counter() - started
    finally:
        loader.close()
    out = {"backend": loader.backend, "clips_per_s": clips / elapsed, "clips": clips, "seconds": elapsed, "workers": workers,
           "decode_threads": loader.decode_threads, "seeking_decoded_per_returned": seeking / max(returned, 1)}
    if loader.decoded_frames_per_clip is not None:
        stream = loader._stream
        out["dali_decoded_per_returned"] = loader.decoded_frames_per_clip / cfg.num_frames
        out["witness_decoded_per_returned"] = stream.witness_frames / max(stream.clips * cfg.num_frames, 1)
    return out


def row_loader_dali(ctx: Context) -> Result:
    r = loader_rate(ctx, "dali", workers=ctx.profile.cut_workers, seconds=ctx.profile.loader_seconds)
    ctx.env["loader_dali_clips_per_s"] = r["clips_per_s"]
    ok = r["backend"] == _dali_backend(ctx) and r["dali_decoded_per_returned"] <= 1.15 * r["seeking_decoded_per_returned"]
    return Result(ok, f"{r['backend']}: {r['clips_per_s']:.0f} clips/s ({r['decode_threads']} decode threads, {r['workers']} cutting "
                      f"processes); decoded/returned frames {r['dali_decoded_per_returned']:.2f} (a seeking decoder "
                      f"{r['seeking_decoded_per_returned']:.2f}) + witnesses {r['witness_decoded_per_returned']:.3f}", r)


def row_loader_reference(ctx: Context) -> Result:
    r = loader_rate(ctx, "reference", workers=ctx.profile.ref_workers, seconds=ctx.profile.loader_seconds)
    ratio = ""
    if "loader_dali_clips_per_s" in ctx.env:
        r["dali_over_reference"] = ctx.env["loader_dali_clips_per_s"] / r["clips_per_s"]
        ratio = f"; dali-gpu / reference = {r['dali_over_reference']:.2f}"
    return Result(r["backend"] == "reference", f"{r['clips_per_s']:.0f} clips/s with {r['workers']} workers{ratio}", r)


def row_decode_threads(ctx: Context) -> Result:
    from pipeline.routing import THREADS_PER_NVDEC, gpu_decode_threads_for

    engines = ctx.nvdec_engines
    if not engines:
        raise Skip(f"the GPU's NVDEC engines are unknown ({ctx.env.get('nvdec_error', 'no answer')})")
    cpus = len(os.sched_getaffinity(0))
    counts = [engines * k for k in (1, 2, 3)]  # 1, 2 and 3 threads per engine
    rates = {t: loader_rate(ctx, "dali", workers=ctx.profile.cut_workers, seconds=ctx.profile.loader_seconds * 0.6, gpu_decode_threads=t)["clips_per_s"]
             for t in counts}
    default = gpu_decode_threads_for(engines, cpus)
    best = max(rates, key=rates.get)
    text = ", ".join(f"{t} threads {r:.0f}" for t, r in rates.items())
    return Result(True, f"{engines} NVDEC engines; clips/s: {text}; the default ({THREADS_PER_NVDEC} per engine, at most {cpus} CPUs) "
                        f"is {default}, the best here {best}", {"engines": engines, "clips_per_s": rates, "default": default, "best": best})


# ---------------------------------------------------------------- GPU rows: train.py
def _train_args(ctx: Context, out: Path, *, backend: str, workers: int, steps: int, extra: list[str] = ()) -> list[str]:
    p = ctx.profile
    args = ["pretrain", "--data", str(ctx.shards("motion")), "--out", str(out), "--backend", backend, "--num-workers", str(workers),
            "--arch", p.arch, "--base-width", str(p.width), "--num-frames", str(p.frames), "--resize", str(p.resize), "--crop-size", str(p.crop),
            "--speeds=" + ",".join(map(str, SPEEDS)), "--num-clips", "4", "--batch-size", str(p.batch), "--eval-batch-size", str(p.batch),
            "--max-steps", str(steps), "--warmup-steps", "5", "--lr", "0.05", "--log-every", "5", "--no-progress", "--no-tensorboard",
            "--device", p.train_device, "--gpu-decode-threads", str(ctx.gpu_decode_threads)]
    return args + (["--amp"] if ctx.cuda else []) + list(extra)


def _metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _steady(records: list[dict]) -> dict:
    """Mean clips/s and data-wait % after the first logged window (cudnn autotuning, loader start-up)."""
    first = records[0]["step"] if records else 0
    window = [r for r in records if r["step"] > first + 4] or records
    return {"clips_per_s": float(np.mean([r["clips_per_s"] for r in window])) if window else float("nan"),
            "data_wait_pct": float(np.mean([r["data_wait_pct"] for r in window])) if window else float("nan"),
            "steps": records[-1]["step"] if records else 0}


def row_train_reference(ctx: Context) -> Result:
    import train

    out = ctx.work / "train_reference"
    steps = ctx.profile.train_steps
    summary = train.main(_train_args(ctx, out, backend="reference", workers=ctx.profile.ref_workers, steps=steps))
    records = _metrics(out)
    s = _steady(records)
    ctx.checkpoint = out / "checkpoint.pt"
    ok = summary["step"] == steps and all(math.isfinite(r["loss"]) for r in records)
    return Result(ok, f"{ctx.profile.arch}{' bf16' if ctx.cuda else ''}, reference loader with {ctx.profile.ref_workers} workers and "
                      f"CUDA-stream prefetch, batch {ctx.profile.batch}x4 clips: {s['clips_per_s']:.0f} clips/s, data wait "
                      f"{s['data_wait_pct']:.0f}%, loss {records[0]['loss']:.2f} -> {records[-1]['loss']:.2f} in {steps} steps",
                  {**s, "first_loss": records[0]["loss"], "last_loss": records[-1]["loss"]})


def row_eval(ctx: Context) -> Result:
    import train

    if ctx.checkpoint is None or not ctx.checkpoint.exists():
        raise Skip("no checkpoint: train_reference did not finish")
    p = ctx.profile
    started = time.perf_counter()
    results = train.main(["eval", "--data", str(ctx.shards("motion")), "--init", str(ctx.checkpoint), "--backend", "reference",
                          "--num-workers", str(min(p.ref_workers, 4)), "--eval-batch-size", str(p.batch), "--num-eval-clips", "2",
                          "--device", p.train_device, "--no-tensorboard"] + (["--amp"] if ctx.cuda else []))
    seconds = time.perf_counter() - started
    ok = "pretext_speed_acc" in results and "retrieval" in results and results["retrieval"]["queries"] > 0
    return Result(ok, f"pretext speed accuracy {results.get('pretext_speed_acc', float('nan')):.3f} (chance {results.get('pretext_speed_chance', 0):.3f}), "
                      f"order {results.get('pretext_order_acc', float('nan')):.3f}; retrieval over {results['retrieval']['queries']} queries; {seconds:.0f} s",
                  {k: v for k, v in results.items() if isinstance(v, (int, float, dict))})


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]).rstrip(os.pathsep)}
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process and its loader workers (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) if log.exists() else ""


KILL_RESUME_STEPS = 24


def row_kill_resume(ctx: Context) -> Result:
    """train.py (a checkpoint every 4 steps) killed with SIGKILL once step 12 is logged, then resumed to step 24:
    the resumed run starts from the last complete checkpoint (8 or later: step 8's is written before step 9
    starts, and metrics reach the log before the checkpoint of the same step), every step is logged once."""
    import train
    from training import checkpoint

    out, total = ctx.work / "kill_resume", KILL_RESUME_STEPS
    args = _train_args(ctx, out, backend="reference", workers=min(ctx.profile.ref_workers, 4), steps=total, extra=["--ckpt-every", "4"])
    args[args.index("--log-every") + 1] = "4"
    log = ctx.work / "kill_resume.log"
    proc = _start(args, log)
    try:
        while proc.poll() is None and not any(r["step"] >= 12 for r in _metrics(out)):
            time.sleep(0.05)
    finally:
        _kill(proc)
    if not (out / "checkpoint.pt").exists():
        return Result(False, f"no checkpoint before the kill (exit {proc.returncode}): {_tail(log)}")
    killed_at = checkpoint.load(out / "checkpoint.pt")["step"]
    summary = train.main(args + ["--resume"])
    records = _metrics(out)
    steps = [r["step"] for r in records]
    ok = 8 <= killed_at < total and summary["step"] == total and steps == list(range(1, total + 1)) and all(math.isfinite(r["loss"]) for r in records)
    return Result(ok, f"killed after the step-{killed_at} checkpoint, resumed to step {summary['step']}; steps logged {steps[0]}..{steps[-1]} "
                      f"({len(steps)} records, {len(set(steps))} distinct)", {"killed_at": killed_at, "steps": steps})


def row_pretrain_dali(ctx: Context) -> Result:
    """R(2+1)D-18 bf16 pretraining on the DALI loader for ``pretrain_seconds`` (a subprocess, then SIGKILL)."""
    out = ctx.work / "pretrain_dali"
    p = ctx.profile
    log = ctx.work / "pretrain_dali.log"
    proc = _start(_train_args(ctx, out, backend="dali", workers=p.cut_workers, steps=100000), log)
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < p.pretrain_seconds:
            time.sleep(0.2)
    finally:
        _kill(proc)
    records = _metrics(out)
    if not records:
        return Result(False, f"no step logged in {p.pretrain_seconds:.0f} s (exit {proc.returncode}): {_tail(log)}")
    s = _steady(records)
    ok = all(math.isfinite(r["loss"]) for r in records) and proc.returncode in (-signal.SIGKILL, None)
    return Result(ok, f"{p.arch}{' bf16' if ctx.cuda else ''} on the DALI loader, batch {p.batch}x4 clips, {p.pretrain_seconds:.0f} s: "
                      f"{s['steps']} steps, {s['clips_per_s']:.0f} clips/s, data wait {s['data_wait_pct']:.0f}%", s)


# ---------------------------------------------------------------- the rows, in order
ROWS = [
    Row("env", 30, row_env),
    Row("bundle", 10, row_bundle),
    Row("shards", 60, row_shards),
    Row("routing", 30, row_routing),
    Row("dali_cpu", 30, row_dali_cpu, dali=True),
    Row("model_cpu", 30, row_model_cpu),
    Row("matmul_bf16", 20, row_matmul, cuda=True),
    Row("identity_vp9", 45, identity_row("vp9"), cuda=True, dali=True),
    Row("identity_h264", 45, identity_row("h264"), cuda=True, dali=True, stand_in=False),  # DALI's CPU decoder has no H.264
    Row("pixel_agreement", 40, row_pixel_agreement, cuda=True, dali=True),
    Row("mjpeg_routing", 40, host_path_row("mjpeg", "auto", "reference", "mjpeg"), cuda=True),
    Row("nvdec_min_size", 40, host_path_row("small", "dali", "dali-cpu", "smaller than 128x128"), cuda=True, dali=True),
    Row("loader_dali_gpu", 45, row_loader_dali, cuda=True, dali=True),
    Row("loader_reference", 50, row_loader_reference, cuda=True),
    Row("decode_threads", 45, row_decode_threads, cuda=True, dali=True, stand_in=False),
    Row("train_reference", 70, row_train_reference, cuda=True),
    Row("eval_gpu", 45, row_eval, cuda=True),
    Row("kill_resume", 70, row_kill_resume, cuda=True),
    Row("pretrain_dali", 90, row_pretrain_dali, cuda=True, dali=True),
    *[Row(f"model_{a}_{n}", 30, model_row(a, n), cuda=True) for a in ARCHS for n in ("bn", "tgn")],
    *[Row(f"compile_{a}_{n}", 60, compile_row(a, n), cuda=True, stand_in=False) for a in ("r2plus1d_18", "r3d_18", "c3d") for n in ("bn", "tgn")],
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python device/check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO / BUNDLE, help=f"the bundle folder (default {BUNDLE}/)")
    p.add_argument("--budget", type=float, default=380.0, help="seconds for the whole run (default 380)")
    p.add_argument("--stand-in", action="store_true", help="run the CUDA rows on the CPU at toy sizes (tests the rows' code, measures nothing)")
    p.add_argument("--only", default="", help="comma-separated row names to run (env and bundle always run)")
    args = p.parse_args(argv)
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else args.bundle / OUT
    report = Report(out / "gpu_check.json")
    rows = ROWS
    if args.only:
        keep = {"env", "bundle", *args.only.split(",")}
        unknown = keep - {r.name for r in ROWS}
        if unknown:
            p.error(f"--only: no row named {', '.join(sorted(unknown))}")
        rows = [r for r in ROWS if r.name in keep]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        ctx = Context(bundle=args.bundle.resolve(), out=out, work=Path(work), profile=STAND_IN if args.stand_in else GPU, stand_in=args.stand_in)
        report.env = ctx.env
        started = time.monotonic()
        print(f"gpu_check: {len(rows)} rows, {args.budget:.0f} s budget, results in {report.path}", flush=True)
        run_rows(rows, ctx, report, total=args.budget)
        counts = {s: sum(r["status"] == s for r in report.rows) for s in ("ok", "failed", "skipped")}
        ctx.env["check_seconds"] = round(time.monotonic() - started, 1)
        report.env = ctx.env
        report.write()
        print(f"gpu_check: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped in {ctx.env['check_seconds']:.0f} s",
              flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
