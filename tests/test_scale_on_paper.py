"""bench/scale_on_paper.py: the measurements behind BENCHMARKS.md "Scale on paper" and its arithmetic."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from model import build_backbone
from synthetic.videos import write_lavfi_video
from bench import scale_on_paper as sop

# ---------------------------------------------------------------- decoded frames per clip


def test_single_clip_that_fills_the_video_decodes_exactly_its_frames():
    got = sop.decoded_frames(frames=16, speeds=(1,), num_clips=1, num_frames=16, gop=16, samples=100)
    assert got == {"seek": 16.0, "from_start": 16.0}


def test_all_intra_seek_decodes_only_each_clips_span():
    # GOP 1: every frame is a keyframe, so a seeking decoder pays span + 1 per clip; with K=2 of speeds
    # {1, 2} both speeds are always drawn: (16 + 31) / 2 per clip, whatever the starts.
    got = sop.decoded_frames(frames=300, speeds=(1, 2), num_clips=2, num_frames=16, gop=1, samples=1000)
    assert got["seek"] == pytest.approx((16 + 31) / 2)


def test_from_start_is_bounded_by_the_furthest_clip():
    # A 31-frame video: the speed-2 clip spans all 31 frames, so one pass decodes 31 frames for 2 clips.
    got = sop.decoded_frames(frames=31, speeds=(-2, 1), num_clips=2, num_frames=16, gop=16, samples=500)
    assert got["from_start"] == pytest.approx(31 / 2)


def test_seek_cost_is_span_plus_mean_keyframe_offset():
    # Speed 1 only, GOP 16, long video: start offset in the GOP is ~uniform on 0..15 -> 16 + 7.5 frames.
    got = sop.decoded_frames(frames=10_000, speeds=(1,), num_clips=1, num_frames=16, gop=16, samples=50_000)
    assert got["seek"] == pytest.approx(16 + 7.5, abs=0.1)


def test_too_short_for_k_speeds_is_refused():
    with pytest.raises(ValueError, match="usable speeds"):
        sop.decoded_frames(frames=40, speeds=(1, 4, 8), num_clips=2, num_frames=16, gop=16)


# ---------------------------------------------------------------- model cost


def _conv_macs(net: nn.Module, clip: torch.Tensor) -> tuple[int, int]:
    """(forward multiply-adds of all Conv3d layers, those of the first one), counted from output shapes."""
    macs: list[int] = []

    def hook(module: nn.Conv3d, _inputs, output):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        macs.append(output.numel() * per_output)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv3d)]
    with torch.no_grad():
        net(clip)
    for h in handles:
        h.remove()
    return sum(macs), macs[0]


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18", "c3d"])
def test_model_cost_counts_forward_and_backward_of_every_conv(arch):
    gmacs, params = sop.model_cost(arch, num_frames=8, crop=32, base_width=4)
    net = build_backbone(arch, base_width=4).eval()
    forward, first = _conv_macs(net, torch.zeros(1, 3, 8, 32, 32))
    # Backward: a weight gradient for every conv, an input gradient for all but the first (the clip).
    expected = 3 * forward - first
    assert gmacs * 1e9 == pytest.approx(expected, rel=0.02)  # the rest: linear layers of the head-less net
    assert params == sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------- VP9 bytes per frame


@pytest.mark.slow
def test_vp9_bytes_per_frame_is_file_size_over_frames_and_grows_with_size(tmp_path):
    src = tmp_path / "src.mp4"
    write_lavfi_video(src, source="testsrc2", num_frames=24, width=320, height=240)
    small = sop.vp9_bytes_per_frame({"t": src}, short_side=64)
    large = sop.vp9_bytes_per_frame({"t": src}, short_side=128)
    assert list(small) == ["t (86x64)"] and list(large) == ["t (170x128)"]
    assert 0 < small["t (86x64)"] < large["t (170x128)"]


# ---------------------------------------------------------------- arithmetic


def test_a100_clip_rate_scales_resnet50_effective_rate():
    images, gmacs = sop.PUBLISHED["a100_resnet50_train"][0], sop.PUBLISHED["resnet50_gmacs"][0]
    # A network as costly per clip as ResNet-50 per image trains as fast, at full efficiency.
    assert sop.a100_clip_rate(3 * gmacs, 1.0) == pytest.approx(images)
    assert sop.a100_clip_rate(6 * gmacs, 0.5) == pytest.approx(images / 4)


def test_plan_arithmetic():
    a = replace(sop.Assumptions(), videos=1000, epochs=10, num_clips=4, hours=1.0, gpus_per_node=8,
                conv3d_efficiency=1.0, batch_per_gpu=10, seconds=10, fps=30)
    images, gmacs = sop.PUBLISHED["a100_resnet50_train"][0], sop.PUBLISHED["resnet50_gmacs"][0]
    # Cost chosen so that one GPU trains exactly 1 clip/s: 40,000 clips need 40,000 GPU-seconds.
    p = sop.plan(a, gmacs_train_per_clip=images * gmacs * 3, params=1_000_000, bytes_per_frame=1000.0,
                 frames_per_clip=50.0)
    assert p.clip_rate == pytest.approx(1.0)
    assert p.total_clips == 40_000
    assert p.gpu_hours == pytest.approx(40_000 / 3600)
    assert p.gpus == 12 and p.nodes == 2  # ceil(11.1), ceil(12 / 8)
    assert p.decode_fps == pytest.approx(50.0)
    assert p.dataset_gb == pytest.approx(1000 * 300 * 1000 / 1e9)
    # 12 GPUs x 0.25 samples/s x 300 kB per video.
    assert p.read_gb_s == pytest.approx(12 * 0.25 * 300_000 / 1e9)
    assert p.step_s == pytest.approx(10 / 0.25)
    assert p.nic_gbit == pytest.approx(2 * 4_000_000 * 8 / 40 / 1e9)
    # One node: no inter-node traffic.
    one = sop.plan(replace(a, hours=100), gmacs_train_per_clip=images * gmacs * 3, params=1_000_000,
                   bytes_per_frame=1000.0, frames_per_clip=50.0)
    assert one.nodes == 1 and one.nic_gbit == 0.0
    assert math.isinf(sop.headroom(one, a)["network at 100 Gb/s per node"])


def test_headroom_names_the_tightest_resource():
    a = replace(sop.Assumptions(), shared_storage_gbyte_s=1.0, cpu_cores_per_gpu=8, nic_gbit=100.0)
    p = sop.Plan(clip_rate=100, total_clips=1, gpu_hours=1, gpus=10, nodes=2, decode_fps=1000,
                 nvdec_fps=(5000, 50_000), cpu_cores_needed=4, dataset_gb=1, read_gb_s=2.0, grad_mb=1,
                 step_s=1, nic_gbit=10)
    room = sop.headroom(p, a)
    assert room["NVDEC decode (per-frame-bound estimate)"] == pytest.approx(5.0)
    assert room["CPU decode, if NVDEC is not used"] == pytest.approx(2.0)
    assert room["shared storage at 1 GB/s"] == pytest.approx(0.5)
    assert room["network at 100 Gb/s per node"] == pytest.approx(10.0)
    assert min(room, key=room.get) == "shared storage at 1 GB/s"


def test_report_prints_what_plan_computes(monkeypatch):
    monkeypatch.setattr(sop, "vp9_bytes_per_frame", lambda gop: {"clip (228x128)": 1500.0})
    monkeypatch.setattr(sop, "model_cost", lambda arch, frames, crop: (120.0, 33_000_000))
    a = sop.Assumptions()
    text = sop.report(a, sweep_hours=(24, 1))
    frames = sop.decoded_frames(frames=300, speeds=a.speeds, num_clips=4, num_frames=16, gop=16)
    p = sop.plan(a, gmacs_train_per_clip=120.0, params=33_000_000, bytes_per_frame=1500.0,
                 frames_per_clip=max(frames.values()))
    assert f"**{p.gpus} GPUs = {p.nodes} node(s) of 8**" in text
    assert f"**{p.clip_rate:.0f} clips/s per GPU**" in text
    assert f"{p.dataset_gb:.0f} GB" in text
    fast = sop.plan(replace(a, hours=1), gmacs_train_per_clip=120.0, params=33_000_000, bytes_per_frame=1500.0,
                    frames_per_clip=max(frames.values()))
    assert f"| 1 h | {fast.gpus} | {fast.nodes} |" in text
    for _, _, source in sop.PUBLISHED.values():
        assert source in text
