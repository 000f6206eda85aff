"""Checkpoints that survive a kill at any moment and load with ``torch.load(weights_only=True)``.

A checkpoint is ``{model, optimizer, scheduler, step, epoch, batch_in_epoch, config, rng}``: the model's
state dict taken from the unwrapped module (no ``module.``/``_orig_mod.`` prefixes), the resolved config as
plain dict/str/number types, and every RNG stream as a tensor. It is written to a temporary file in the
same folder, fsynced, and renamed over the old one, so a reader sees either the old or the new file.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from shardformat import atomic_file
from training.errors import UsageError


def rng_state() -> dict[str, torch.Tensor]:
    """Python, NumPy, torch CPU and (if present) CUDA RNG states, all as tensors."""
    version, mt, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": torch.tensor([version, *mt, -1 if gauss is None else 1], dtype=torch.int64),
        "python_gauss": torch.tensor([0.0 if gauss is None else gauss], dtype=torch.float64),
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_extra": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    assert np_kind == "MT19937"
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"].tolist()
    gauss = None if py[-1] == -1 else float(state["python_gauss"].item())
    random.setstate((py[0], tuple(py[1:-1]), gauss))
    pos, has_gauss = state["numpy_extra"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, float(state["numpy_gauss"].item())))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_atomic(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (:func:`shardformat.atomic_file`: tmp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(path) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as err:  # e.g. a full disk: keep the previous checkpoint, say why
        cause = err if isinstance(err, OSError) else (err.__context__ or err)
        raise OSError(f"could not write checkpoint {path} ({cause}); the previous checkpoint, if any, is unchanged") from err
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu", *, option: str = "") -> dict:
    """Load a checkpoint written by :func:`save_atomic`; only tensors and plain types are accepted. A missing,
    truncated or corrupt file, or one holding other Python objects (never run), is a :class:`UsageError`
    naming the file (after ``option``, the command-line option that gave it, if any)."""
    named = f"{option} {path}" if option else f"checkpoint {path}"
    if not Path(path).is_file():
        raise UsageError(f"{named}: no such file (a checkpoint.pt written by train.py is needed)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- damaged bytes make the unpickler raise almost any type (IndexError, KeyError, struct.error...)
        raise UsageError(f"{named} cannot be loaded and is refused: {_why_refused(err)}") from None


def _why_refused(err: Exception) -> str:
    """What is wrong with the file, in our words: torch's own message advises ``weights_only=False`` or an
    allowlist, which is the wrong advice for a damaged or untrusted file, so it is never passed on."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # torch bolds part of its advice
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a Python object ({found[1]}) other than tensors and plain types, and nothing in it was run; "
                "train.py writes and reads checkpoints of tensors and plain types only")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "file ended early")
    return f"the file is truncated or corrupt ({type(err).__name__}: {first.split('. ')[0][:200]}); copy it again or use another"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
