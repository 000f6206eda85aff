"""The offline bundle for the GPU check (``device/bundle.py``, ``device/install.py``, ``device/run.sh``).

The last test is the CPU rehearsal of the GPU machine: on a clean copy of this tree, ``make device-bundle`` for this
machine's Python; a fresh virtual environment holding only what the GPU image holds (torch, numpy, rich, matplotlib,
tensorboard, and an ``nvidia`` package as CUDA wheels install it); the transfers made one after another as
docs/gpu.md says; ``bash .device/run.sh`` with no network (a network namespace of its own) and that environment's
``python3`` first on PATH: the bundle installs, every row that needs no CUDA is ok, every CUDA row says
``no CUDA``, exit status 0. The same test checks every transfer's size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from device import bundle as bundle_mod
from device import check, install
from device.layout import MIB, PART_LIMIT, TRANSFER_LIMIT

REPO = Path(__file__).resolve().parent.parent
#: What the GPU machine's image holds besides Python (the rehearsal's environment gets exactly these).
IMAGE_PACKAGES = ["numpy", "rich", "matplotlib", "tensorboard"]


# ---------------------------------------------------------------- parts, joins, transfers
@pytest.mark.parametrize(("total", "room"), [(198_655_209, 11 * MIB), (198_655_209, 2 * MIB), (198_655_209, -3), (50 * MIB, 70 * MIB), (1, 5)])
def test_part_sizes_fill_the_final_transfer_and_keep_every_part_under_the_limit(total, room):
    sizes, last_in_final = bundle_mod.part_sizes(total, room)
    assert sum(sizes) == total and all(0 < s <= PART_LIMIT for s in sizes)
    assert last_in_final == (room > 0)
    if last_in_final:
        assert sizes[-1] == min(room, PART_LIMIT, total)
    alone = sizes[:-1] if last_in_final else sizes
    assert len(alone) == -(-(total - (sizes[-1] if last_in_final else 0)) // PART_LIMIT)  # as few transfers as the limit allows


def _fake_wheel(path: Path, name: str = "pkgx", version: str = "1.0") -> Path:
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", f"VERSION = {version!r}\n")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


def _fake_bundle(root: Path) -> Path:
    """A bundle in the real layout with small files: one wheel, and a 'DALI' wheel (a namespace package under
    ``nvidia/``, like DALI's) split in three parts."""
    b = root / ".device"
    (b / "wheels").mkdir(parents=True)
    wheel = _fake_wheel(b / "wheels" / "pkgx-1.0-py3-none-any.whl")
    cache = root / "downloads"
    cache.mkdir()
    dali = cache / "nvidia_fake-2.0-py3-none-any.whl"
    with zipfile.ZipFile(dali, "w") as z:
        z.writestr("nvidia/fake/__init__.py", "__version__ = '2.0'\n" + "# padding\n" * 2000)
        z.writestr("nvidia_fake-2.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: nvidia-fake\nVersion: 2.0\n")
        z.writestr("nvidia_fake-2.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("nvidia_fake-2.0.dist-info/RECORD", "")
    size = dali.stat().st_size
    parts = bundle_mod.split_file(dali, [size // 3, size // 3, size - 2 * (size // 3)], b / "dali")
    manifest = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "built": "test",
                "wheels": {wheel.name: bundle_mod.sha256(wheel)},
                "dali": {"wheel": dali.name, "sha256": bundle_mod.sha256(dali), "parts": {p.name: bundle_mod.sha256(p) for p in parts}}}
    (b / "manifest.json").write_text(json.dumps(manifest))
    return b


def test_parts_are_checked_one_by_one_as_they_arrive_and_joined_when_all_are_here(tmp_path, capsys):
    b = _fake_bundle(tmp_path)
    held = tmp_path / "held"
    shutil.move(b / "dali", held)
    (b / "dali").mkdir()
    manifest = json.loads((b / "manifest.json").read_text())
    for i, name in enumerate(manifest["dali"]["parts"]):
        assert install.join_dali(b, manifest)[0] is None
        shutil.copy2(held / name, b / "dali" / name)  # one transfer carried this part
        assert install.receive(b, manifest) == 0
        here, missing = capsys.readouterr().out.split("; still to come: ")
        assert here.split("checked: ")[1].split() == list(manifest["dali"]["parts"])[: i + 1]
        assert missing.split() == (list(manifest["dali"]["parts"])[i + 1:] or ["none"])
    wheel, why = install.join_dali(b, manifest)
    assert why == "" and bundle_mod.sha256(wheel) == manifest["dali"]["sha256"]
    (b / "dali" / "part-01").write_bytes(b"damaged in transit")
    assert install.receive(b, manifest) == 1 and "part-01 does not match its sha256" in capsys.readouterr().err
    wheel, why = install.join_dali(b, manifest)
    assert wheel is None and why.startswith("parts sha256 mismatch part-01")
    (b / "dali" / "part-02").unlink()
    assert "missing part-02" in install.join_dali(b, manifest)[1]


def test_install_is_offline_into_the_private_target_and_kept_on_a_rerun(tmp_path, capsys):
    b = _fake_bundle(tmp_path)
    assert install.main(["--bundle", str(b)]) == 0
    site = b / "site"
    assert (site / "pkgx" / "__init__.py").exists() and (site / "nvidia" / "fake" / "__init__.py").exists()
    assert "extend_path" in (site / "nvidia" / "__init__.py").read_text()  # see test_rehearsal: the image's nvidia package
    stamp = json.loads((site / "INSTALLED.json").read_text())
    assert stamp["dali"] == "nvidia_fake-2.0-py3-none-any.whl" and stamp["dali_missing"] == "" and stamp["method"].startswith("pip install --no-index")
    assert install.main(["--bundle", str(b)]) == 0 and "already installed" in capsys.readouterr().out
    (b / "dali" / "part-00").unlink()
    assert install.main(["--bundle", str(b)]) == 0  # the check then runs without DALI, and says why
    stamp = json.loads((site / "INSTALLED.json").read_text())
    assert stamp["dali"] is None and "missing part-00" in stamp["dali_missing"]


def test_install_refuses_another_python_and_a_damaged_wheel_in_one_line(tmp_path, capsys):
    b = _fake_bundle(tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**manifest, "python": "3.99"}))
    assert install.main(["--bundle", str(b)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "built for Python 3.99" in err and "make device-bundle DEVICE_PYTHON=" in err
    (b / "manifest.json").write_text(json.dumps(manifest))
    (b / "wheels" / "pkgx-1.0-py3-none-any.whl").write_bytes(b"truncated")
    assert install.main(["--bundle", str(b)]) == 1 and "carry .device/wheels again" in capsys.readouterr().err


def test_transfers_carry_one_part_each_then_the_rest(tmp_path):
    b = _fake_bundle(tmp_path)
    (b / "run.sh").write_text("#!/bin/sh\n")
    (b / "shards").mkdir()
    (b / "shards" / "x.tar").write_bytes(b"\0" * 1000)
    parts = sorted((b / "dali").iterdir())
    plan = bundle_mod.transfers(b, parts, 3 * MIB, last_in_final=True)
    assert [t["carry"][-1] for t in plan[:-1]] == [".device/dali/part-00", ".device/dali/part-01"]
    assert plan[-1]["carry"] == [".device/run.sh", ".device/manifest.json", ".device/wheels", ".device/shards", ".device/dali/part-02"]
    assert [t["command"] for t in plan] == ["bash .device/run.sh receive"] * 2 + ["bash .device/run.sh"]
    assert all(t["bytes"] > 3 * MIB for t in plan)
    assert bundle_mod.transfers(b, parts, 3 * MIB, last_in_final=False)[-1]["carry"][-1] == ".device/shards"


def test_the_gpu_flavour_and_pins_come_from_the_project():
    dali, av = bundle_mod.requirements()
    assert dali.startswith(bundle_mod.dali_flavour() + "==") and av.startswith("av==")
    assert bundle_mod.dali_flavour() == "nvidia-dali-cuda130"  # CUDA 13: the GPU machine's torch


def test_run_sh_passes_shellcheck():
    script = REPO / "device" / "run.sh"
    assert os.access(script, os.X_OK)
    shellcheck = Path(sys.executable).parent / "shellcheck"  # the dev extra's binary
    lint = subprocess.run([str(shellcheck) if shellcheck.exists() else "shellcheck", "--shell=bash", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


# ---------------------------------------------------------------- the rehearsal
def _no_network() -> list[str]:
    """A command prefix that runs its command in a network namespace of its own (no interface but loopback, down)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: the no-network rehearsal cannot run here")
    prefix = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{' '.join(prefix)} is refused here ({probe.stderr.strip()}): the no-network rehearsal cannot run")
    return prefix


def _clean_copy(dest: Path) -> None:
    """This tree as a fresh checkout sees it: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)  # the bundle measures the copy git would carry


@pytest.mark.slow
def test_rehearsal_offline_bundle_on_a_fresh_image_environment(tmp_path):
    no_network = _no_network()
    repo, image, out = tmp_path / "repo", tmp_path / "image", tmp_path / "out"
    _clean_copy(repo)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = Path(sys.prefix)
    made = subprocess.run(["make", "-C", str(repo), "device-bundle", f"DEVICE_PYTHON={version}", f"VENV={venv}", "-o", f"{venv}/.installed"],
                          capture_output=True, text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    manifest = json.loads((repo / ".device" / "manifest.json").read_text())
    transfers = manifest["transfers"]
    assert manifest["python"] == version and manifest["dali"] is not None
    assert len(transfers) >= 2 and all(t["bytes"] <= TRANSFER_LIMIT for t in transfers)
    repo_bytes = bundle_mod.repo_bytes(repo)
    for t in transfers:  # measured again: the repository's copy plus what the transfer carries
        carried = sum(bundle_mod.size_of(repo / c) for c in t["carry"])
        assert repo_bytes + carried <= TRANSFER_LIMIT, (t["carry"], (repo_bytes + carried) / MIB)
    assert all(f"{t['bytes'] / MIB:5.1f} MiB" in made.stdout for t in transfers)

    # the GPU image: Python with torch and a few packages, an `nvidia` package as CUDA wheels install it, nothing else
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(image)], check=True, timeout=300)
    torch_version = __import__("torch").__version__.split("+")[0]
    pip = subprocess.run([str(image / "bin" / "python"), "-m", "pip", "install", "-q", f"torch=={torch_version}", *IMAGE_PACKAGES],
                         capture_output=True, text=True, timeout=1800)
    assert pip.returncode == 0, pip.stderr[-3000:]
    site = Path(subprocess.run([str(image / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "nvidia" / "cublas").mkdir(parents=True)
    (site / "nvidia" / "__init__.py").write_text("")  # a regular package, as some CUDA wheels make it
    (site / "nvidia" / "cublas" / "__init__.py").write_text("")
    for module in ("av", "nvidia.dali", "webdataset", "torchcodec"):
        probe = subprocess.run([str(image / "bin" / "python"), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"the image environment must not hold {module}"

    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
           "PATH": f"{image / 'bin'}{os.pathsep}{os.environ['PATH']}", "OUT": str(out), "OMP_NUM_THREADS": "1"}

    def transfer_and_run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*no_network, "bash", "-c", f"cd {repo} && {command}"], capture_output=True, text=True, env=env, timeout=900)

    # the transfers one after another: every part but those of the final transfer arrives first
    bundle = repo / ".device"
    held = tmp_path / "held"
    shutil.move(bundle / "dali", held)
    (bundle / "dali").mkdir()
    for t in transfers[:-1]:
        for path in t["carry"]:
            if path.startswith(".device/dali/"):
                shutil.copy2(held / Path(path).name, repo / path)
        received = transfer_and_run(t["command"])
        assert received.returncode == 0 and "still to come:" in received.stdout, received.stdout + received.stderr
    for path in transfers[-1]["carry"]:
        if path.startswith(".device/dali/"):
            shutil.copy2(held / Path(path).name, repo / path)
    ran = transfer_and_run(transfers[-1]["command"])
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]

    result = json.loads((out / "gpu_check.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == [r.name for r in check.ROWS]
    cpu_rows = [r.name for r in check.ROWS if not r.cuda]
    assert cpu_rows == ["env", "bundle", "shards", "routing", "dali_cpu", "model_cpu"]
    assert {n: rows[n]["status"] for n in cpu_rows} == dict.fromkeys(cpu_rows, "ok"), {n: rows[n] for n in cpu_rows}
    assert all(rows[r.name]["status"] == "skipped" and rows[r.name]["reason"] == "no CUDA" for r in check.ROWS if r.cuda)
    stamp = rows["bundle"]["metrics"]["installed"]
    assert stamp["dali"] == manifest["dali"]["wheel"] and str(bundle / "site") in rows["bundle"]["metrics"]["dali_from"]
    assert result["env"]["python"].startswith(version) and result["env"]["dali"] == rows["bundle"]["metrics"]["dali"]
    printed = [line.split()[:2] for line in ran.stdout.splitlines() if line.split()[:1] in (["ok"], ["failed"], ["skipped"])]
    assert printed == [[r["status"], r["name"]] for r in result["rows"]]  # one line per row, as it ended
    assert "install: " in ran.stdout and "--no-index" in ran.stdout
