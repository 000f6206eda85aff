"""Forward+backward throughput of each backbone with BatchNorm3d vs temporal group norm.

    python -m bench model                                   # issue default: batch 8, 16x112x112, base width 64
    python -m bench model --batch 2 --repeats 2             # full-size networks, fewer clips (CPU)
    python -m bench model --size 64 --base-width 32         # a smaller configuration

BN and TGN steps alternate (BN first on even repeats, TGN first on odd ones) so that drift in a shared
machine's load hits both alike; the reported ratios are TGN/BN ratios of the median wall time and of the median
CPU time of this process (the latter is less disturbed by other processes competing for the cores).
``--layer`` adds a microbenchmark of one normalization layer (BN vs TGN with 4 groups) on a stem-sized
activation, which isolates the normalization's own cost from the convolutions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

from model.backbones import BACKBONES, DEFAULT_TGN_GROUPS, build_backbone
from model.tgn import TemporalGroupNorm
from pipeline.cli_syntax import LIST_METAVAR, ArgumentParser, int_list, name_list, show_list


def _train_step(module: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """One forward+backward; returns (wall seconds, this process's CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(x.requires_grad)
    module(x).float().square().mean().backward()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(steps: dict[str, Callable[[], tuple[float, float]]], *, warmup: int, repeats: int) -> dict[str, float]:
    """Time ``steps["bn"]`` and ``steps["tgn"]`` alternately. Returns median wall seconds per variant and the
    TGN/BN ratios of the median wall times (``ratio``) and of the median CPU times (``cpu_ratio``)."""
    for _ in range(warmup):
        steps["bn"](), steps["tgn"]()
    wall: dict[str, list[float]] = {"bn": [], "tgn": []}
    cpu: dict[str, list[float]] = {"bn": [], "tgn": []}
    for r in range(repeats):
        for variant in ("bn", "tgn") if r % 2 == 0 else ("tgn", "bn"):
            seconds, cpu_seconds = steps[variant]()
            wall[variant].append(seconds)
            cpu[variant].append(cpu_seconds)
    median = {f"{v}_{kind}": statistics.median(d[v]) for kind, d in (("s", wall), ("cpu", cpu)) for v in d}
    return {**median, "ratio": median["tgn_s"] / median["bn_s"], "cpu_ratio": median["tgn_cpu"] / median["bn_cpu"]}


def bench_backbone(name: str, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    models = {
        norm: build_backbone(name, base_width=args.base_width, norm=norm, tgn_groups=args.tgn_groups).train()
        for norm in ("bn", "tgn")
    }
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)  # (B, 3, T, H, W)
    return interleaved(
        {norm: (lambda m=m: _train_step(m, x)) for norm, m in models.items()},
        warmup=args.warmup,
        repeats=args.repeats,
    )


def bench_layer(args: argparse.Namespace) -> dict[str, float]:
    """One norm layer on the stem's output shape (B, base_width, T, H/2, W/2), forward+backward."""
    channels, groups = args.base_width, 4
    x = torch.randn(args.batch, channels, args.frames, args.size // 2, args.size // 2, requires_grad=True)
    layers = {"bn": nn.BatchNorm3d(channels), "tgn": TemporalGroupNorm(channels, num_groups=groups)}
    return interleaved(
        {norm: (lambda layer=layer: _train_step(layer, x)) for norm, layer in layers.items()},
        warmup=2,
        repeats=max(10, args.repeats),
    )


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m bench model", description=__doc__)
    parser.add_argument("--backbones", type=name_list(sorted(BACKBONES)), metavar=LIST_METAVAR, default=show_list(sorted(BACKBONES)),
                        help="backbones to time, comma-separated")
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip T")
    parser.add_argument("--size", type=int, default=112, help="spatial size H = W in pixels")
    parser.add_argument("--base-width", type=int, default=64, help="channels of the first stage (64 = full size)")
    parser.add_argument("--tgn-groups", type=int_list, metavar=LIST_METAVAR, default=show_list(DEFAULT_TGN_GROUPS),
                        help="TGN groups per stage, comma-separated (5 stages)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--layer", action="store_true", help="also time one BN vs TGN layer on a stem-sized input")
    args = parser.parse_args(argv)
    if len(args.tgn_groups) != 5:
        parser.error(f"--tgn-groups needs 5 values (one per stage), got {show_list(args.tgn_groups)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"command: python -m bench model {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
        f"{args.frames}x{args.size}x{args.size} clips, base width {args.base_width}, "
        f"TGN groups {tuple(args.tgn_groups)}; "
        f"median of {args.repeats} interleaved forward+backward steps after {args.warmup} warm-up"
    )
    print()
    print("| backbone | BN s/step | BN clips/s | TGN s/step | TGN clips/s | TGN/BN wall time | TGN/BN CPU time |")
    print("|---|---|---|---|---|---|---|")
    for name in args.backbones:
        r = bench_backbone(name, args)
        print(
            f"| {name} | {r['bn_s']:.3f} | {args.batch / r['bn_s']:.2f} | {r['tgn_s']:.3f} | "
            f"{args.batch / r['tgn_s']:.2f} | {r['ratio']:.3f} | {r['cpu_ratio']:.3f} |",
            flush=True,
        )
    if args.layer:
        r = bench_layer(args)
        shape = "x".join(str(n) for n in (args.batch, args.base_width, args.frames, args.size // 2, args.size // 2))
        print(
            f"| one norm layer {shape}, g=4 | {r['bn_s'] * 1e3:.2f} ms | | {r['tgn_s'] * 1e3:.2f} ms | | "
            f"{r['ratio']:.3f} | {r['cpu_ratio']:.3f} |"
        )
