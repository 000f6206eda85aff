"""Forward+backward time of a TGN (and a BN) backbone in the default layout vs ``channels_last_3d``.

    python -m bench model-layout                          # r3d_18, batch 4, 16x64x64, base width 32, CPU
    python -m bench model-layout --arch r2plus1d_18 --repeats 9

Why: TGN normalizes a grouped *view* of a contiguous ``(B, C, T, H, W)`` activation; a channels-last input
cannot be viewed that way and is copied at every grouped layer, which is why ``train.py`` keeps TGN networks
in the default layout. The two layouts alternate (order swapped every repeat) so a shared machine's load
drift hits both alike; reported: median seconds per step and the channels-last/default ratio per norm.
"""

from __future__ import annotations

import json
import statistics

import torch

from bench.model import _train_step
from model.backbones import BACKBONES, build_backbone
from pipeline.cli_syntax import ArgumentParser

LAYOUTS = {"default": torch.contiguous_format, "channels_last": torch.channels_last_3d}


def bench_layouts(arch: str, norm: str, *, batch: int, frames: int, size: int, base_width: int, warmup: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_backbone(arch, base_width=base_width, norm=norm).train()
    x = torch.randn(batch, 3, frames, size, size)  # (B, 3, T, H, W)
    steps = {}
    for name, layout in LAYOUTS.items():
        steps[name] = (layout, x.contiguous(memory_format=layout))
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for r in range(warmup + repeats):
        for name in LAYOUTS if r % 2 == 0 else reversed(LAYOUTS):
            layout, inp = steps[name]
            model.to(memory_format=layout)
            wall, _ = _train_step(model, inp)
            if r >= warmup:
                seconds[name].append(wall)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    return {"arch": arch, "norm": norm, **{f"{k}_s": round(v, 4) for k, v in median.items()},
            "channels_last_vs_default": round(median["channels_last"] / median["default"], 3)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = ArgumentParser(prog="python -m bench model-layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(BACKBONES), default="r3d_18", help="backbone")
    p.add_argument("--batch", type=int, default=4, help="clips per step")
    p.add_argument("--frames", type=int, default=16, help="frames per clip T")
    p.add_argument("--size", type=int, default=64, help="spatial size H = W in pixels")
    p.add_argument("--base-width", type=int, default=32, help="channels of the first stage (64 = full size)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per layout first")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per layout (alternating; median reported)")
    args = p.parse_args(argv)
    results = [bench_layouts(args.arch, norm, batch=args.batch, frames=args.frames, size=args.size, base_width=args.base_width,
                             warmup=args.warmup, repeats=args.repeats) for norm in ("tgn", "bn")]
    for r in results:
        print(json.dumps(r))
    return results
