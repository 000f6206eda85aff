"""Checkpoints from elsewhere cannot run code: every ``torch.load`` in the project passes ``weights_only=True``,
and a checkpoint carrying a pickle payload (an object whose ``__reduce__`` runs a command) is refused by
``train.py``'s resume, fine-tune and eval paths with a message naming the file, without running the payload.
A truncated or empty checkpoint given to ``--resume`` is an error naming the file, never a silent restart."""

from __future__ import annotations

import ast
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from reliability_helpers import REPO

from training import checkpoint
from training.config import resolve

sys.path.insert(0, str(REPO))
import train  # noqa: E402  (train.py lives at the repo root)


class Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do with worse commands)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _write_payload_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint shaped like train.py's (real tensors around the payload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"evil": Payload(marker), "weight": torch.zeros(3)}, "step": 1, "config": {}, "mode": "pretrain"}, path)
    return path


def test_the_payload_is_real(tmp_path):
    """The control: unpickled without restrictions, the file does run its command."""
    marker = tmp_path / "pwned"
    path = _write_payload_checkpoint(tmp_path / "evil.pt", marker)
    with zipfile.ZipFile(path) as z:
        (pkl,) = [n for n in z.namelist() if n.endswith("data.pkl")]

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):  # tensors' storages: not needed to trigger the payload
                return None

        with z.open(pkl) as f:
            try:
                Unpickler(f).load()
            except Exception:  # noqa: BLE001 -- the storages are fake; the payload ran before that mattered
                pass
    assert marker.exists()


def _assert_refused(error: BaseException, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the checkpoint's payload was executed"
    assert str(path) in str(error) and "refused" in str(error)


def test_checkpoint_load_refuses_a_pickle_payload(tmp_path):
    marker = tmp_path / "pwned"
    path = _write_payload_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(ValueError) as info:
        checkpoint.load(path)
    _assert_refused(info.value, path, marker)
    assert "os.system" in str(info.value) or "posix.system" in str(info.value)


def _run_folder(tmp_path: Path) -> Path:
    """A run folder as train.py leaves it (config.json), ready for ``--resume``."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = resolve("pretrain", {"data": {"data": str(tmp_path / "data")}, "run": {"out": str(out), "progress": False}})
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    return out


def test_resume_refuses_a_payload_checkpoint_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    out = _run_folder(tmp_path)
    path = _write_payload_checkpoint(out / "checkpoint.pt", marker)
    with pytest.raises(ValueError) as info:
        train.main(["pretrain", "--out", str(out), "--resume", "--device", "cpu"])
    _assert_refused(info.value, path, marker)


@pytest.mark.parametrize("mode", ["finetune", "eval"])
def test_init_refuses_a_payload_checkpoint_without_running_it(tmp_path, mode):
    marker = tmp_path / "pwned"
    path = _write_payload_checkpoint(tmp_path / "downloaded" / "checkpoint.pt", marker)
    with pytest.raises(ValueError) as info:
        train.main([mode, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--init", str(path), "--device", "cpu"])
    _assert_refused(info.value, path, marker)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "zip without pickle"])
def test_resume_from_a_damaged_checkpoint_is_a_clear_error_not_a_restart(tmp_path, damage):
    out = _run_folder(tmp_path)
    good = checkpoint.save_atomic({"model": {"w": torch.arange(5000.0)}, "step": 3}, tmp_path / "good.pt").read_bytes()
    data = {"truncated": good[: len(good) // 2], "empty": b"", "garbage": os.urandom(4096)}.get(damage)
    path = out / "checkpoint.pt"
    if data is None:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/version", "3\n")
    else:
        path.write_bytes(data)
    before = path.read_bytes()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(ValueError) as info:
        train.main(["pretrain", "--out", str(out), "--resume", "--device", "cpu"])
    assert str(path) in str(info.value) and "cannot be loaded" in str(info.value)
    assert path.read_bytes() == before  # not overwritten by a fresh run
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'


def _project_sources() -> list[Path]:
    skip = {".venv", ".git", "node_modules", "build", "dist"}
    return [p for p in REPO.rglob("*.py") if not skip.intersection(p.relative_to(REPO).parts)]


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_every_torch_load_in_the_project_passes_weights_only_true():
    calls, offenders = 0, []
    for path in _project_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            name = f"{owner.id if isinstance(owner, ast.Name) else '?'}.{node.func.attr}"
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "torch.load":
                calls += 1
                if not _is_true(keywords.get("weights_only")):
                    offenders.append(f"{where}: torch.load without weights_only=True")
            elif name in ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "torch.jit.load", "joblib.load"):
                offenders.append(f"{where}: {name}")
            elif node.func.attr == "load" and _is_true(keywords.get("allow_pickle")):
                offenders.append(f"{where}: load(allow_pickle=True)")
    offenders = [o for o in offenders if not o.startswith(f"tests/{Path(__file__).name}:")]  # the payload control above
    assert calls >= 1 and offenders == []
