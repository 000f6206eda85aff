"""Scale on paper: GPUs and nodes for a Kinetics-400-sized pretraining, and where the pipeline bottlenecks.

    python -m bench scale-on-paper                      # the tables of BENCHMARKS.md "Scale on paper"
    python -m bench scale-on-paper --hours 6 --arch r2plus1d_18 --epochs 200

No GPU was available, so this is arithmetic on three kinds of numbers, each labelled where it is printed:
- measured here: VP9 bytes per frame of the project's own encoder settings (`preprocess.media.encoder_args`)
  at a 128 px short side, GOP 16, on real footage; the backbone's multiply-adds and parameters (torch's
  flop counter on the project's models); decoded frames per clip (the sampling rule of docs/design.md §2, simulated);
  the CPU rates of docs/design.md §3.
- published (source titles in PUBLISHED): NVDEC decode rate, NVDECs per A100, an A100 training rate.
- assumed (ASSUMPTIONS, overridable on the command line): dataset shape, epochs, wall time, node shape.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.cli_syntax import ArgumentParser, flag
from pipeline.config import ClipConfig
from training.config import field_docs
from training.presets import DATASET_VIDEOS

# Published figures: value, unit, source (title). Kept apart from anything measured here.
PUBLISHED = {
    "nvdec_fps_1080p_h264": (
        748, "frames/s per NVDEC, H.264 1920x1080 4:2:0, Ampere",
        "NVIDIA Video Codec SDK, 'NVDEC Application Note', NVDEC performance table (as quoted in a public note)",
    ),
    "a100_nvdecs": (5, "NVDEC engines per A100", "NVIDIA developer blog, 'Improving Computer Vision with NVIDIA A100 GPUs'"),
    "a100_resnet50_train": (
        2600, "images/s, ResNet-50 224px, AMP, one A100 (timm benchmark.py)",
        "huggingface/pytorch-image-models issue #1491, 'throughput drop when train resnet50'",
    ),
    "resnet50_gmacs": (4.09, "G multiply-adds per 224px image", "torchvision docs, 'resnet50' (ResNet50_Weights: GFLOPS 4.09)"),
}

# Measured in this repo on the 2-core CPU (docs/design.md §3), 170x128 VP9 GOP 16, 16-frame clips, one thread.
MEASURED_CPU_DECODE_CLIPS_PER_S = {"DALI CPU": (17, 22, 13), "torchcodec": (60, 28, 22)}  # speeds 1, 4, 8
MEASURED_CPU_TRAIN_CLIPS_PER_S = 0.3  # R3D-18-shaped, 16x112x112, fwd+bwd, 2 threads


@dataclass(frozen=True)
class Assumptions:
    videos: int = DATASET_VIDEOS["kinetics400"]["train"]
    """Kinetics-400 train videos (as published; ``training.presets.DATASET_VIDEOS``)."""
    seconds: float = 10.0
    """Length of a video, s."""
    fps: float = 30.0
    """Frame rate kept by preprocess (source rate; most Kinetics clips are 30 fps)."""
    epochs: int = 100
    """Pretraining passes over the videos (one pretext sample per video per epoch)."""
    hours: float = 24.0
    """Wall time wanted for the pretraining, h."""
    arch: str = "r3d_18"
    """Backbone."""
    num_clips: int = ClipConfig.num_clips
    """K clips per pretext sample (train.py default)."""
    num_frames: int = ClipConfig.num_frames
    """T frames per clip."""
    crop: int = 112
    """Square crop fed to the network, px."""
    speeds: tuple[int, ...] = ClipConfig.speeds
    """Speed set (train.py default)."""
    gop: int = 16
    """Keyframe interval of the shards."""
    batch_per_gpu: int = 32
    """Pretext samples per GPU per step (K clips each)."""
    frame_width: int = 228
    frame_height: int = 128
    """Stored frame size: 16:9 sources at a 128 px short side."""
    gpus_per_node: int = 8
    cpu_cores_per_gpu: int = 12
    """A typical 8-GPU node has 96-128 cores."""
    conv3d_efficiency: float = 0.5
    """Fraction of ResNet-50's effective A100 rate that 3D convolutions reach (cuDNN 3D kernels are less tuned)."""
    nvdec_small_frame_cap: float = 10.0
    """NVDEC rate at small frames, as a multiple of its 1080p frame rate: per-frame costs stop pixel-rate scaling."""
    nic_gbit: float = 100.0
    """Inter-node bandwidth per node, Gb/s."""
    shared_storage_gbyte_s: float = 2.0
    """Aggregate read bandwidth of a shared file system (one NFS server class), GB/s."""


# ----------------------------------------------------------------------------------------------- measured


def vp9_bytes_per_frame(sources: dict[str, Path] | None = None, *, short_side: int = 128, gop: int = 16) -> dict[str, float]:
    """Encode ``sources`` (default: the real sample footage) with the preprocess VP9 settings
    (``preprocess.media.encoder_args``) at ``short_side`` and return bytes per decoded frame, keyed by name and size."""
    import av
    import ffmpeg

    from preprocess.media import check_source, encoder_args, output_size
    from synthetic.videos import sample_footage

    if sources is None:  # the "distorted" clip is a deliberately degraded copy, not footage
        sources = {k: v for k, v in sample_footage().items() if "distorted" not in k}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, src in sources.items():
            size = output_size(check_source(Path(src)), short_side)
            dst = Path(tmp) / f"{name}.webm"
            (
                ffmpeg.input(str(src)).video.filter("scale", *size).filter("format", "yuv420p")
                .output(str(dst), an=None, **encoder_args("vp9", gop))
                .global_args("-nostdin", "-v", "error").overwrite_output().run(capture_stdout=True, capture_stderr=True)
            )
            with av.open(str(dst)) as container:
                frames = sum(1 for _ in container.decode(video=0))
            out[f"{name} ({size[0]}x{size[1]})"] = dst.stat().st_size / frames
    return out


def model_cost(arch: str, num_frames: int = 16, crop: int = 112, *, base_width: int = 64) -> tuple[float, int]:
    """(G multiply-adds for forward+backward of one clip, parameters), counted by torch on shapes alone."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model import build_backbone

    with torch.device("meta"):
        net = build_backbone(arch, base_width=base_width)
        clip = torch.zeros(1, 3, num_frames, crop, crop)
    with FlopCounterMode(display=False) as counter:
        net(clip).sum().backward()
    return counter.get_total_flops() / 2e9, sum(p.numel() for p in net.parameters())


def decoded_frames(
    *, frames: int, speeds: tuple[int, ...], num_clips: int, num_frames: int, gop: int,
    samples: int = 50_000, seed: int = 0,
) -> dict[str, float]:
    """Mean frames a decoder must decode per clip, for the pretext sampling of docs/design.md §2.

    ``seek``: each clip decoded from the keyframe at or before its first frame to its last frame.
    ``from_start``: the union of a sample's clips decoded in one pass from frame 0 (a decoder that does not
    seek, like DALI's CPU decoder, docs/design.md §3), shared by the sample's ``num_clips`` clips.
    """
    rng = np.random.default_rng(seed)
    usable = np.array([s for s in speeds if abs(s) * (num_frames - 1) <= frames - 1])
    if len(usable) < num_clips:
        raise ValueError(f"a {frames}-frame video has fewer than {num_clips} usable speeds")
    # K distinct speeds per sample: the first K of a random permutation of the usable ones.
    chosen = usable[np.argsort(rng.random((samples, len(usable))), axis=1)[:, :num_clips]]
    spans = np.abs(chosen) * (num_frames - 1)  # (samples, K): frames between a clip's first and last
    starts = np.floor(rng.random(spans.shape) * (frames - spans)).astype(np.int64)  # 0 <= p <= N-1-span
    ends = starts + spans
    seek = ends - (starts // gop) * gop + 1
    from_start = (ends.max(axis=1) + 1) / num_clips
    return {"seek": float(seek.mean()), "from_start": float(from_start.mean())}


# ----------------------------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class Plan:
    """Everything derived for one wall-time target; rates are per GPU unless named otherwise."""

    clip_rate: float
    """Training clips/s one A100 sustains."""
    total_clips: float
    gpu_hours: float
    gpus: int
    nodes: int
    decode_fps: float
    """Frames/s one GPU's loader must decode (the worse of the two decoder behaviours)."""
    nvdec_fps: tuple[float, float]
    """NVDEC frames/s per A100 at the stored frame size: (per-frame-bound estimate, pixel-rate scaling)."""
    cpu_cores_needed: float
    """CPU cores per GPU to decode on the CPU instead (DALI CPU rate of docs/design.md §3)."""
    dataset_gb: float
    read_gb_s: float
    """Shard bytes read per second by all GPUs together (a whole video per sample)."""
    grad_mb: float
    step_s: float
    nic_gbit: float
    """Inter-node traffic per node for the gradient all-reduce, Gb/s."""


def a100_clip_rate(gmacs_train_per_clip: float, efficiency: float) -> float:
    """Clips/s of one A100: ResNet-50's published effective multiply-add rate, scaled by ``efficiency``."""
    images_s = PUBLISHED["a100_resnet50_train"][0]
    gmacs_image = PUBLISHED["resnet50_gmacs"][0]
    effective_gmac_s = images_s * gmacs_image * 3  # forward + backward ~ 3x forward
    return effective_gmac_s * efficiency / gmacs_train_per_clip


def plan(a: Assumptions, *, gmacs_train_per_clip: float, params: int, bytes_per_frame: float,
         frames_per_clip: float) -> Plan:
    clip_rate = a100_clip_rate(gmacs_train_per_clip, a.conv3d_efficiency)
    total_clips = a.videos * a.epochs * a.num_clips
    gpu_hours = total_clips / clip_rate / 3600
    gpus = math.ceil(gpu_hours / a.hours)
    nodes = math.ceil(gpus / a.gpus_per_node)
    nvdec_1080p = PUBLISHED["nvdec_fps_1080p_h264"][0] * PUBLISHED["a100_nvdecs"][0]
    pixel_ratio = 1920 * 1080 / (a.frame_width * a.frame_height)
    video_bytes = a.seconds * a.fps * bytes_per_frame
    sample_rate = clip_rate / a.num_clips
    grad_bytes = params * 4  # DDP all-reduces fp32 gradients (autocast keeps the parameters in fp32)
    step_s = a.batch_per_gpu / sample_rate
    return Plan(
        clip_rate=clip_rate,
        total_clips=total_clips,
        gpu_hours=gpu_hours,
        gpus=gpus,
        nodes=nodes,
        decode_fps=clip_rate * frames_per_clip,
        nvdec_fps=(nvdec_1080p * min(a.nvdec_small_frame_cap, pixel_ratio), nvdec_1080p * pixel_ratio),
        cpu_cores_needed=clip_rate / float(np.mean(MEASURED_CPU_DECODE_CLIPS_PER_S["DALI CPU"])),
        dataset_gb=a.videos * video_bytes / 1e9,
        read_gb_s=gpus * sample_rate * video_bytes / 1e9,
        grad_mb=grad_bytes / 1e6,
        step_s=step_s,
        # Ring all-reduce between nodes (NVLink inside a node): each node sends ~2x the gradient per step.
        nic_gbit=2 * grad_bytes * 8 / step_s / 1e9 if nodes > 1 else 0.0,
    )


def headroom(p: Plan, a: Assumptions) -> dict[str, float]:
    """Supply / demand for each resource the loop shares; the smallest is the first bottleneck."""
    return {
        "GPU compute (by definition)": 1.0,
        "NVDEC decode (per-frame-bound estimate)": p.nvdec_fps[0] / p.decode_fps,
        "CPU decode, if NVDEC is not used": a.cpu_cores_per_gpu / p.cpu_cores_needed,
        f"shared storage at {a.shared_storage_gbyte_s:g} GB/s": a.shared_storage_gbyte_s / p.read_gb_s,
        f"network at {a.nic_gbit:g} Gb/s per node": a.nic_gbit / p.nic_gbit if p.nic_gbit else math.inf,
    }


# ----------------------------------------------------------------------------------------------- report


def report(a: Assumptions, sweep_hours: tuple[float, ...] = (24, 6, 1)) -> str:
    bpf = vp9_bytes_per_frame(gop=a.gop)
    bytes_per_frame = max(bpf.values())  # the busiest footage: Kinetics is handheld YouTube footage
    gmacs, params = model_cost(a.arch, a.num_frames, a.crop)
    frames = int(a.seconds * a.fps)
    per_clip = decoded_frames(frames=frames, speeds=a.speeds, num_clips=a.num_clips, num_frames=a.num_frames, gop=a.gop)
    frames_per_clip = max(per_clip.values())
    p = plan(a, gmacs_train_per_clip=gmacs, params=params, bytes_per_frame=bytes_per_frame, frames_per_clip=frames_per_clip)
    sample_rate = p.clip_rate / a.num_clips
    cpu = MEASURED_CPU_DECODE_CLIPS_PER_S["DALI CPU"]
    lines = [
        f"Command: `python -m bench scale-on-paper --hours {a.hours:g} --epochs {a.epochs} --arch {a.arch}`"
        " (about 30 s on the 2-core CPU).",
        "",
        "**Measured here.** VP9 with the preprocess encoder settings (libvpx-vp9 realtime, cpu-used 8, CRF 30, GOP "
        f"{a.gop}) at a 128 px short side: " + ", ".join(f"{k} {v:.0f} B/frame" for k, v in bpf.items())
        + f". `{a.arch}` at {a.num_frames}x{a.crop}x{a.crop}: {gmacs:.1f} G multiply-adds per clip forward+backward"
        f" (about 3x the forward pass), {params / 1e6:.1f} M parameters (torch's flop counter on the project's model)."
        f" Decoded frames per clip (K={a.num_clips}, speeds {a.speeds}, T={a.num_frames}, {frames}-frame videos,"
        f" simulated): {per_clip['seek']:.1f} for a decoder that seeks to the previous keyframe,"
        f" {per_clip['from_start']:.1f} when a sample's K clips are decoded in one pass from frame 0 (a clip at speed"
        f" 8 spans {8 * (a.num_frames - 1) + 1} frames to keep {a.num_frames}). This 2-core CPU (docs/design.md §3): training"
        f" {MEASURED_CPU_TRAIN_CLIPS_PER_S} clips/s; DALI CPU decode {min(cpu)}-{max(cpu)} clips/s per thread.",
        "",
        "**Published** (not measured here):",
        "",
        "| figure | value | source |",
        "|---|---|---|",
        *[f"| {unit} | {value:g} | {src} |" for value, unit, src in PUBLISHED.values()],
        "",
        f"**Assumed:** {a.videos:,} videos x {a.seconds:g} s x {a.fps:g} fps stored at {a.frame_width}x{a.frame_height}"
        f" (16:9, 128 px short side); {a.epochs} epochs, one pretext sample (K={a.num_clips} clips) per video per"
        f" epoch; 3D convolutions reach {a.conv3d_efficiency:.0%} of ResNet-50's effective A100 rate; NVDEC at small"
        f" frames is bounded by {a.nvdec_small_frame_cap:g}x its 1080p frame rate (per-frame costs) rather than by"
        f" pixel rate; nodes of {a.gpus_per_node} A100 with {a.cpu_cores_per_gpu} CPU cores per GPU and"
        f" {a.nic_gbit:g} Gb/s between nodes; shared storage delivers {a.shared_storage_gbyte_s:g} GB/s in total.",
        "",
        "| step | arithmetic | result |",
        "|---|---|---|",
        f"| A100 clip rate | {PUBLISHED['a100_resnet50_train'][0]} img/s x {PUBLISHED['resnet50_gmacs'][0]} GMAC x 3"
        f" x {a.conv3d_efficiency:g} / {gmacs:.1f} GMAC | **{p.clip_rate:.0f} clips/s per GPU** ({sample_rate:.0f}"
        " samples/s) |",
        f"| work | {a.videos:,} videos x {a.epochs} epochs x {a.num_clips} clips | {p.total_clips / 1e6:.0f} M clips ="
        f" {p.gpu_hours:,.0f} GPU-hours |",
        f"| GPUs for {a.hours:g} h | {p.gpu_hours:,.0f} / {a.hours:g} | **{p.gpus} GPUs = {p.nodes} node(s) of"
        f" {a.gpus_per_node}** |",
        f"| the same on this CPU | {p.total_clips / 1e6:.0f} M clips / {MEASURED_CPU_TRAIN_CLIPS_PER_S} clips/s |"
        f" {p.total_clips / MEASURED_CPU_TRAIN_CLIPS_PER_S / 3600 / 24 / 365:,.0f} years |",
        f"| decode demand | {p.clip_rate:.0f} clips/s x {frames_per_clip:.0f} frames | {p.decode_fps:,.0f} frames/s"
        " per GPU |",
        f"| NVDEC supply (A100) | {PUBLISHED['a100_nvdecs'][0]} x {PUBLISHED['nvdec_fps_1080p_h264'][0]} fps x"
        f" {a.nvdec_small_frame_cap:g} ... x {1920 * 1080 / (a.frame_width * a.frame_height):.0f} (pixel ratio) |"
        f" {p.nvdec_fps[0]:,.0f} ... {p.nvdec_fps[1]:,.0f} frames/s per GPU |",
        f"| CPU decode instead | {p.clip_rate:.0f} clips/s / {np.mean(cpu):.1f} clips/s per core |"
        f" {p.cpu_cores_needed:.1f} cores per GPU |",
        f"| dataset | {a.videos:,} x {frames} frames x {bytes_per_frame:.0f} B | {p.dataset_gb:.0f} GB |",
        f"| storage reads | {p.gpus} GPUs x {sample_rate:.0f} samples/s x {frames * bytes_per_frame / 1e3:.0f} kB |"
        f" {p.read_gb_s:.2f} GB/s |",
        f"| gradient all-reduce | {params / 1e6:.1f} M x 4 B per step of {a.batch_per_gpu} samples ({p.step_s:.2f} s)"
        f" | {p.grad_mb:.0f} MB/step, {p.nic_gbit:.1f} Gb/s per node |",
        "",
        f"Headroom (supply / demand) at {a.hours:g} h, smallest first:",
        "",
        "| resource | headroom |",
        "|---|---|",
    ]
    for name, ratio in sorted(headroom(p, a).items(), key=lambda kv: kv[1]):
        lines.append(f"| {name} | {'unused' if math.isinf(ratio) else f'{ratio:.1f}x'} |")
    lines += [
        "",
        "Shorter wall times (same work):",
        "",
        "| wall time | GPUs | nodes | storage reads | network per node | tightest non-GPU resource |",
        "|---|---|---|---|---|---|",
    ]
    for hours in sweep_hours:
        q = plan(replace(a, hours=hours), gmacs_train_per_clip=gmacs, params=params, bytes_per_frame=bytes_per_frame,
                 frames_per_clip=frames_per_clip)
        room = {k: v for k, v in headroom(q, replace(a, hours=hours)).items() if not k.startswith("GPU")}
        tight = min(room, key=room.get)
        lines.append(f"| {hours:g} h | {q.gpus} | {q.nodes} | {q.read_gb_s:.2f} GB/s | {q.nic_gbit:.1f} Gb/s |"
                     f" {tight} ({room[tight]:.1f}x) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench scale-on-paper", description=__doc__.splitlines()[0])
    defaults, docs = Assumptions(), field_docs(Assumptions)
    for name in ("hours", "epochs", "arch", "num_clips", "conv3d_efficiency", "batch_per_gpu", "videos"):
        value = getattr(defaults, name)
        parser.add_argument(flag(name), type=type(value), default=value, help=docs.get(name, ""))
    args = parser.parse_args(argv)
    print(report(replace(defaults, **vars(args))))
    return 0
