"""``make device-bundle``: everything the GPU check needs on a machine with no network, no Docker and no ffmpeg,
built here on a CPU machine that has them (docs/gpu.md "The GPU check without Docker or network").

    python -m device.bundle                      # for the GPU machine's Python (3.12), into .device/
    python -m device.bundle --python 3.11        # for this machine's Python (the CPU rehearsal)
    python -m device.bundle --no-dali            # without the DALI wheel (its rows are then skipped there)

``.device/`` (git-ignored) then holds:

* ``wheels/``: every package the check imports that the GPU machine's image lacks (PyAV, and the few pure-Python
  packages ``import nvidia.dali`` imports), resolved for that Python and manylinux x86-64, installed there with
  ``--no-deps``: nothing else is needed and nothing is fetched;
* ``dali/part-NN``: the DALI wheel (its CUDA flavour is docker/Dockerfile's ``DALI_FLAVOUR``, its version the
  project's pin) in parts of at most 60 MiB, joined and checked against its sha256 there;
* ``shards/``: the check's shard sets (``layout.SETS``), built with ``preprocess`` from generated videos;
* ``run.sh``: the only command to run there; ``manifest.json``: the sha256 of every file and the transfers.

Each transfer onto that machine carries a copy of the repository (tracked files and untracked ones git does not
ignore) plus the bundle paths it names, 64 MiB in all. The DALI parts go first, one per transfer, and the
last transfer carries the rest and runs the check; the part sizes are chosen so the transfers are as few as
the limit allows. The plan is printed, stored in the manifest, and the build fails if a transfer would not fit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from device.layout import (BUNDLE, CACHE, DALI_PARTS, MANIFEST, MIB, PART_LIMIT, REPO_MARGIN, RUN, SETS, SHARDS,
                           TRANSFER_LIMIT, WHEELS, sha256)

REPO = Path(__file__).resolve().parent.parent

#: What ``import nvidia.dali`` (its ops, fn, pipeline_def and types, the loader's imports) imports at module
#: level among DALI's requirements. The others (nvimgcodec, nvcomp, libcst, makefun, nvtx) serve image decoding
#: and DALI's experimental dynamic mode, which the check does not import. The rehearsal test proves the list:
#: it imports DALI from the bundle where only the GPU image's packages are installed.
DALI_IMPORTS = ("optree", "gast", "astunparse", "six")
#: manylinux tags a Linux x86-64 machine with glibc 2.28+ accepts (pip wants them named for another Python).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def _pins():
    sys.path.insert(0, str(REPO / "docker"))
    try:
        import pins  # docker/pins.py: the project's pins, read from pyproject.toml
    finally:
        sys.path.pop(0)
    return pins


def dali_flavour() -> str:
    """The GPU image's DALI wheel name (docker/Dockerfile ``ARG DALI_FLAVOUR=...``: CUDA 13, like the GPU machine's torch)."""
    match = re.search(r"^ARG DALI_FLAVOUR=(\S+)", (REPO / "docker" / "Dockerfile").read_text(), re.M)
    if match is None:
        raise SystemExit("device.bundle: docker/Dockerfile has no ARG DALI_FLAVOUR=...")
    return match.group(1)


def requirements() -> tuple[str, str]:
    """(the DALI requirement in the GPU flavour, the PyAV requirement), both at the project's pinned versions."""
    pins = _pins()
    wanted = pins.image_requirements(dali_flavour())
    dali = next(r for r in wanted if pins.requirement_name(r) == pins.requirement_name(dali_flavour()))
    return dali, pins.find("av")


def download(requirement: str, python: str, cache: Path) -> Path:
    """The one wheel pip picks for ``requirement`` on ``python`` (e.g. ``3.12``), manylinux x86-64, no dependencies."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", requirement)
    dest = cache / f"py{python}" / name
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python, "--dest", str(dest)]
    command += [f"--platform={p}" for p in PLATFORMS] + [requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"device.bundle: pip could not download {requirement} for Python {python}: {' | '.join(tail) or wheels}")
    return wheels[0]


def requires_dist(wheel: Path) -> dict[str, str]:
    """A wheel's ``Requires-Dist`` lines (extras and markers dropped): normalized name -> full requirement."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    found = {}
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = line.split(":", 1)[1].split(";")[0].strip()
            name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
            found[re.sub(r"[-_.]+", "-", name).lower()] = re.sub(r"\[[^\]]*\]", "", requirement)
    return found


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def repo_bytes(repo: Path = REPO) -> int:
    """What every transfer's copy of the repository weighs: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                           capture_output=True, check=True).stdout.decode().split("\0")
    return sum((repo / n).stat().st_size for n in names if n and (repo / n).is_file())


# ---------------------------------------------------------------- shard sets
def build_sets(dest: Path, work: Path, *, workers: int, motion_videos: int = 28, motion_frames: int = 300) -> None:
    """Every set of ``layout.SETS`` into ``dest/NAME`` (``preprocess`` output folders), from videos made in ``work``.
    ``motion_videos`` / ``motion_frames``: the motion set's train split (smaller for tests of the check's code)."""
    from preprocess import build_shards
    from synthetic.motion import write_motion_dataset
    from synthetic.videos import write_lavfi_video, write_numbered_video

    def numbered(name: str, *, codec: str, videos: dict[str, int], width: int = 176, height: int = 128, short_side: int = 128):
        src = work / name
        for stem, frames in videos.items():
            write_numbered_video(src / ("walk" if int(stem[1:]) % 2 else "run") / f"{stem}.mp4", num_frames=frames,
                                 width=width, height=height)
        build_shards(src, dest / name, labels_from_dirs=True, codec=codec, gop=16, short_side=short_side, min_frames=16,
                     workers=workers, progress=False)

    numbered("vp9", codec="vp9", videos={f"v{i}": 300 for i in range(4)})
    numbered("h264", codec="h264", videos={f"v{i}": 300 for i in range(4)})
    numbered("mjpeg", codec="mjpeg", videos={f"v{i}": 96 for i in range(2)})
    numbered("small", codec="vp9", videos={f"v{i}": 64 for i in range(3)}, width=96, height=96, short_side=96)
    videos = write_motion_dataset(work / "motion", train_per_class=0, test_per_class=1, unlabeled=motion_videos, size=128,
                                  num_frames=motion_frames, slow=2, fast=5, design="friction", seed=0)
    out = dest / "motion"
    build_shards(videos["unlabeled"], out, split="train", short_side=128, workers=workers, progress=False)
    build_shards(videos["test"], out, split="test", labels_from_dirs=True, short_side=128, workers=workers, progress=False)
    for i in range(2):  # saturated colour: a colour-matrix or range error shows, which grey frame numbers would hide
        write_lavfi_video(work / "colour" / f"c{i}.mp4", source="testsrc2" if i == 0 else "smptehdbars", num_frames=64, width=176,
                          height=128, extra_output_args={"crf": 12})
    for codec in ("vp9", "h264"):
        build_shards(work / "colour", dest / "colour", split=codec, codec=codec, gop=16, short_side=128, min_frames=16,
                     workers=workers, progress=False)


# ---------------------------------------------------------------- the DALI parts and the transfers
def part_sizes(total: int, room_in_final: int) -> tuple[list[int], bool]:
    """Sizes of the DALI wheel's parts, and whether the last one travels with the final transfer: it fills what
    that transfer has left (``room_in_final``, at most ``PART_LIMIT``); the others share the rest evenly, each at
    most ``PART_LIMIT``, one transfer each."""
    last = max(0, min(room_in_final, PART_LIMIT, total))
    rest = total - last
    count = math.ceil(rest / PART_LIMIT)
    sizes = [rest // count + (1 if i < rest % count else 0) for i in range(count)]
    return (sizes + [last], True) if last else (sizes, False)


def split_file(path: Path, sizes: list[int], dest: Path) -> list[Path]:
    """``path`` cut into consecutive parts of ``sizes`` bytes: ``dest/part-00``, ``part-01``..."""
    assert sum(sizes) == path.stat().st_size
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    with open(path, "rb") as f:
        for i, size in enumerate(sizes):
            part = dest / f"part-{i:02d}"
            with open(part, "wb") as out:
                left = size
                while left:
                    block = f.read(min(left, 1 << 22))
                    out.write(block)
                    left -= len(block)
            parts.append(part)
    return parts


MANIFEST_ROOM = 64 * 1024
"""Bytes counted for manifest.json in each transfer (it is written after the plan: a few KiB)."""


def transfers(bundle: Path, parts: list[Path], repo: int, *, last_in_final: bool) -> list[dict]:
    """The transfers, in order: one per DALI part (but the last when it travels with the final one), then the
    final one with everything else, which runs the check. Each: the paths it carries (relative to the
    repository root), its bytes with the repository's copy, and the command it runs there."""
    base = bundle.name
    always = [f"{base}/{RUN}", f"{base}/{MANIFEST}"]
    alone = parts[:-1] if last_in_final else parts
    plan = [{"carry": always + [f"{base}/{DALI_PARTS}/{part.name}"], "command": f"bash {base}/{RUN} receive"} for part in alone]
    final = always + [f"{base}/{WHEELS}", f"{base}/{SHARDS}"] + ([f"{base}/{DALI_PARTS}/{parts[-1].name}"] if last_in_final else [])
    plan.append({"carry": final, "command": f"bash {base}/{RUN}"})
    for t in plan:
        t["bytes"] = repo + MANIFEST_ROOM + sum(size_of(bundle.parent / c) for c in t["carry"] if not c.endswith(MANIFEST))
    return plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m device.bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default="3.12", help="the GPU machine's Python version (default 3.12)")
    p.add_argument("--out", type=Path, default=REPO / BUNDLE, help=f"bundle folder (default {BUNDLE}/ in the repository)")
    p.add_argument("--no-dali", action="store_true", help="leave the DALI wheel out (the check's DALI rows are then skipped)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="preprocess workers for the shard sets")
    p.add_argument("--sets-only", action="store_true", help="only the shard sets, into OUT/shards (the image's check: docker/gpu_check.sh)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        p.error(f"--python: a version like 3.12, got {args.python!r}")
    started = time.perf_counter()
    bundle = args.out.resolve()
    if args.sets_only:
        shutil.rmtree(bundle / SHARDS, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="device-videos-") as work:
            build_sets(bundle / SHARDS, Path(work), workers=args.workers)
        print(f"device.bundle: shard sets in {bundle / SHARDS} in {time.perf_counter() - started:.0f} s", flush=True)
        return 0
    cache = bundle / CACHE
    for folder in (WHEELS, DALI_PARTS, SHARDS):  # rebuilt from scratch; downloads stay in cache/
        shutil.rmtree(bundle / folder, ignore_errors=True)
    (bundle / WHEELS).mkdir(parents=True)

    dali_requirement, av_requirement = requirements()
    print(f"device.bundle: wheels for Python {args.python} (manylinux x86-64): {dali_requirement}, {av_requirement}", flush=True)
    dali_wheel = download(dali_requirement, args.python, cache)
    deps = requires_dist(dali_wheel)
    missing = [n for n in DALI_IMPORTS if n not in deps]
    if missing:
        raise SystemExit(f"device.bundle: {dali_wheel.name} no longer requires {missing}: update DALI_IMPORTS in device/bundle.py")
    wheels = [download(av_requirement, args.python, cache)] + [download(deps[n], args.python, cache) for n in DALI_IMPORTS]
    for wheel in wheels:
        shutil.copy2(wheel, bundle / WHEELS / wheel.name)

    print(f"device.bundle: shard sets ({', '.join(SETS)})", flush=True)
    with tempfile.TemporaryDirectory(prefix="device-videos-") as work:
        build_sets(bundle / SHARDS, Path(work), workers=args.workers)

    shutil.copy2(REPO / "device" / RUN, bundle / RUN)
    (bundle / RUN).chmod(0o755)
    repo = repo_bytes() + REPO_MARGIN
    final = [bundle / RUN, bundle / WHEELS, bundle / SHARDS]
    room = TRANSFER_LIMIT - repo - MANIFEST_ROOM - sum(size_of(f) for f in final)
    parts, last_in_final = [], False
    if not args.no_dali:
        sizes, last_in_final = part_sizes(dali_wheel.stat().st_size, room)
        parts = split_file(dali_wheel, sizes, bundle / DALI_PARTS)
    manifest = {
        "python": args.python,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wheels": {w.name: sha256(bundle / WHEELS / w.name) for w in wheels},
        "dali": None if args.no_dali else {"wheel": dali_wheel.name, "sha256": sha256(dali_wheel),
                                           "parts": {part.name: sha256(part) for part in parts}},
        "sets": sorted(SETS),
    }
    manifest["transfers"] = transfers(bundle, parts, repo, last_in_final=last_in_final)
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    too_big = False
    print(f"device.bundle: {len(manifest['transfers'])} transfer(s), each the repository's copy ({repo / MIB:.1f} MiB with "
          f"{REPO_MARGIN // MIB} MiB to spare) plus the paths it carries; limit {TRANSFER_LIMIT // MIB} MiB:")
    for i, t in enumerate(manifest["transfers"], 1):
        over = t["bytes"] > TRANSFER_LIMIT
        too_big |= over
        print(f"  {i}. {t['bytes'] / MIB:5.1f} MiB{'  OVER THE LIMIT' if over else ''}  carry {' '.join(t['carry'])}  ->  {t['command']}")
    if too_big:
        print(f"device.bundle: a transfer is over {TRANSFER_LIMIT // MIB} MiB: make the shard sets smaller (device/bundle.py build_sets)",
              file=sys.stderr)
        return 1
    print(f"device.bundle: {bundle} ready in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
