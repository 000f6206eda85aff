"""Check and install the offline bundle on the GPU machine, from its own files only (``.device/run.sh`` runs this).

    python3 device/install.py --bundle .device --receive   which DALI parts are here so far, each checked
    python3 device/install.py --bundle .device             check everything, join the DALI parts, install

Every file is checked against the sha256 in ``manifest.json``. The wheels (and the DALI wheel, once all its
parts are here) are installed with ``pip install --no-index --no-deps --target .device/site``: no index is
asked, no dependency is resolved, nothing outside the bundle is read. ``.device/site/INSTALLED.json`` says what was
installed and how; an install that is already there for the same bundle is kept (a rerun on a warm machine).
Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from device.layout import CACHE, DALI_PARTS, INSTALLED, SITE, WHEELS, read_manifest, sha256  # noqa: E402


def parts_status(bundle: Path, manifest: dict) -> tuple[list[str], list[str], list[str]]:
    """DALI parts (ok, missing, corrupt) by name."""
    ok, missing, corrupt = [], [], []
    for name, digest in (manifest["dali"] or {}).get("parts", {}).items():
        path = bundle / DALI_PARTS / name
        if not path.is_file():
            missing.append(name)
        elif sha256(path) != digest:
            corrupt.append(name)
        else:
            ok.append(name)
    return ok, missing, corrupt


def receive(bundle: Path, manifest: dict) -> int:
    if manifest["dali"] is None:
        print("install: this bundle has no DALI wheel (built with --no-dali)")
        return 0
    ok, missing, corrupt = parts_status(bundle, manifest)
    print(f"install: DALI parts here and checked: {' '.join(ok) or 'none'}; still to come: {' '.join(missing) or 'none'}", flush=True)
    for name in corrupt:
        print(f"install: {name} does not match its sha256: carry it again", file=sys.stderr)
    return 1 if corrupt else 0


def join_dali(bundle: Path, manifest: dict) -> tuple[Path | None, str]:
    """(the DALI wheel joined from its parts and checked, or None, and why not)."""
    dali = manifest["dali"]
    if dali is None:
        return None, "not in this bundle (built with --no-dali)"
    ok, missing, corrupt = parts_status(bundle, manifest)
    if missing or corrupt:
        problems = ([f"missing {' '.join(missing)}"] if missing else []) + ([f"sha256 mismatch {' '.join(corrupt)}"] if corrupt else [])
        return None, f"parts {'; '.join(problems)} (the machine restarted between transfers, or a transfer was skipped)"
    wheel = bundle / CACHE / dali["wheel"]
    if not (wheel.is_file() and sha256(wheel) == dali["sha256"]):
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with open(wheel, "wb") as out:
            for name in dali["parts"]:
                with open(bundle / DALI_PARTS / name, "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
        if sha256(wheel) != dali["sha256"]:
            return None, f"the joined {wheel.name} does not match its sha256"
    return wheel, ""


def has_pip(python: str) -> bool:
    return subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0


def install(bundle: Path, manifest: dict) -> int:
    started = time.perf_counter()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != manifest["python"]:
        print(f"install: the bundle was built for Python {manifest['python']}, this is Python {here}: "
              f"make device-bundle DEVICE_PYTHON={here}", file=sys.stderr)
        return 1
    wheels = []
    for name, digest in manifest["wheels"].items():
        path = bundle / WHEELS / name
        if not path.is_file() or sha256(path) != digest:
            print(f"install: {WHEELS}/{name} is missing or does not match its sha256: carry {bundle.name}/{WHEELS} again", file=sys.stderr)
            return 1
        wheels.append(path)
    dali_wheel, dali_reason = join_dali(bundle, manifest)
    if dali_wheel is not None:
        wheels.append(dali_wheel)
    site, stamp_path = bundle / SITE, bundle / SITE / INSTALLED
    names = sorted(w.name for w in wheels)
    if stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("bundle") == manifest["built"] and stamp.get("wheels") == names:
            print(f"install: already installed in {site} ({len(names)} wheels, by {stamp['method']})", flush=True)
            return 0
    if not has_pip(sys.executable):
        print(f"install: {sys.executable} has no pip: `{sys.executable} -m ensurepip` installs it from Python's own files "
              "(no network)", file=sys.stderr)
        return 1
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    method = "pip install --no-index --no-deps --target"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                             "--disable-pip-version-check", "--quiet", "--target", str(site), *map(str, wheels)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"install: pip failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    _share_the_nvidia_package(site)
    stamp = {"bundle": manifest["built"], "python": here, "wheels": names, "method": method,
             "dali": dali_wheel.name if dali_wheel else None, "dali_missing": dali_reason, "seconds": round(time.perf_counter() - started, 1)}
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    print(f"install: {len(names)} wheels into {site} by {method} in {stamp['seconds']} s"
          + ("" if dali_wheel else f"; DALI not installed: {dali_reason}"), flush=True)
    return 0


NVIDIA_INIT = """# Written by device/install.py. DALI installs nvidia/dali into this private target, while the GPU image's own
# site-packages may hold an `nvidia` package too (CUDA library wheels, some with an nvidia/__init__.py that makes
# it a regular package: `import nvidia.dali` would then look only there). This package comes first on the path
# and takes every other `nvidia` folder on sys.path into its own path, so both DALI and the image's CUDA wheels import.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
"""


def _share_the_nvidia_package(site: Path) -> None:
    """Make ``site/nvidia`` a package that extends its path over every ``nvidia`` folder on ``sys.path``."""
    package = site / "nvidia"
    if package.is_dir() and not (package / "__init__.py").exists():
        (package / "__init__.py").write_text(NVIDIA_INIT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 device/install.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="the bundle folder (.device)")
    p.add_argument("--receive", action="store_true", help="only check the DALI parts received so far")
    args = p.parse_args(argv)
    try:
        manifest = read_manifest(args.bundle)
    except (OSError, ValueError) as e:
        print(f"install: {args.bundle}/manifest.json cannot be read ({e}): every transfer carries it", file=sys.stderr)
        return 1
    return receive(args.bundle, manifest) if args.receive else install(args.bundle.resolve(), manifest)


if __name__ == "__main__":
    raise SystemExit(main())
