"""Read the project's pins from pyproject.toml, so the image installs exactly what `make` installs.

The Dockerfile calls this before the source is copied (only pyproject.toml is in the image then):

    python3 docker/pins.py torch          ->  torch==2.13.0          (installed first, from PyPI like `make`)
    python3 docker/pins.py requirements   ->  every other [project] dependency, one per line
    python3 docker/pins.py requirements --dali-flavour nvidia-dali-cuda130
                                          ->  the same, with the DALI wheel of that CUDA flavour (same version)
    python3 docker/pins.py cuda-major     ->  12                     (the CUDA major of the pinned DALI wheel)

Why two DALI flavours: PyPI's torch 2.13.0 for Linux x86-64 is a CUDA 13 build, so the GPU image pairs it
with ``nvidia-dali-cuda130`` (and a CUDA 13 base image). CPU machines keep ``nvidia-dali-cuda120`` (the
wheel the CPU tests were built and measured with). Both are the same DALI release built from the same
source; they differ only in the CUDA toolkit their GPU operators link. Everything CPU tests run (the CPU
video decoder with its bundled FFmpeg, ``external_source``, the pipeline executor, operator schemas) is
the same code in both.

Standard library only: it runs on the base image's bare python3 (3.11+ for tomllib).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# nvidia-dali-cuda120 -> CUDA 12, nvidia-dali-cuda110 -> CUDA 11, nvidia-dali-cuda130 -> CUDA 13.
_DALI_FLAVOUR = re.compile(r"^nvidia-dali-cuda(\d+?)0$")


def dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """The ``[project] dependencies`` requirement strings, as written."""
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def requirement_name(requirement: str) -> str:
    """Normalized distribution name of a requirement string (PEP 503: lower case, runs of -_. become -)."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def pinned_version(requirement: str) -> str | None:
    """The version of an exact ``name==X`` pin, else None."""
    match = re.search(r"==\s*([^\s,;]+)", requirement)
    return match.group(1) if match else None


def find(name: str, pyproject: Path = PYPROJECT) -> str:
    """The requirement string for distribution ``name``; KeyError if the project does not depend on it."""
    for requirement in dependencies(pyproject):
        if requirement_name(requirement) == requirement_name(name):
            return requirement
    raise KeyError(f"{name} is not a [project] dependency in {pyproject}")


def torch_requirement(pyproject: Path = PYPROJECT) -> str:
    """The torch pin; it must be exact, because the image fetches that version from the CUDA wheel index."""
    requirement = find("torch", pyproject)
    if pinned_version(requirement) is None:
        raise ValueError(f"torch must be pinned with == in {pyproject}, got {requirement!r}")
    return requirement


def other_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """Every dependency except torch (installed in its own layer, from the CUDA index)."""
    return [r for r in dependencies(pyproject) if requirement_name(r) != "torch"]


def flavour_cuda_major(name: str) -> int:
    """CUDA major of a DALI wheel name (``nvidia-dali-cuda130`` -> 13); ValueError for other names."""
    match = _DALI_FLAVOUR.match(requirement_name(name))
    if match is None:
        raise ValueError(f"not a DALI wheel flavour (nvidia-dali-cudaXY0): {name!r}")
    return int(match.group(1))


def _dali_requirement(pyproject: Path) -> str:
    for requirement in dependencies(pyproject):
        if _DALI_FLAVOUR.match(requirement_name(requirement)):
            return requirement
    raise KeyError(f"no nvidia-dali-cudaXY0 dependency in {pyproject}")


def dali_cuda_major(pyproject: Path = PYPROJECT) -> int:
    """CUDA major version of the pinned DALI wheel flavour (``nvidia-dali-cuda120`` -> 12)."""
    return flavour_cuda_major(_dali_requirement(pyproject))


def image_requirements(flavour: str, pyproject: Path = PYPROJECT) -> list[str]:
    """:func:`other_requirements` with the DALI requirement's name replaced by ``flavour`` (its version kept)."""
    flavour_cuda_major(flavour)  # validates the name
    dali = _dali_requirement(pyproject)
    spec = dali[_NAME.match(dali).end():]
    return [flavour + spec if r == dali else r for r in other_requirements(pyproject)]


def main(argv: list[str]) -> int:
    commands = {
        ("torch",): lambda: print(torch_requirement()),
        ("requirements",): lambda: print("\n".join(other_requirements())),
        ("cuda-major",): lambda: print(dali_cuda_major()),
    }
    if len(argv) == 3 and argv[:2] == ["requirements", "--dali-flavour"]:
        try:
            print("\n".join(image_requirements(argv[2])))
        except ValueError as e:
            print(f"pins.py: {e}", file=sys.stderr)
            return 2
        return 0
    if tuple(argv) not in commands:
        print("usage: python3 docker/pins.py {torch|requirements [--dali-flavour NAME]|cuda-major}", file=sys.stderr)
        return 2
    commands[tuple(argv)]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
