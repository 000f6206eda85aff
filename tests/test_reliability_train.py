"""`train.py` killed with SIGKILL mid-epoch (at random moments, several seeds) and in the middle of writing a
checkpoint: the run folder only ever holds a complete, loadable checkpoint (or none), and resuming from it
ends exactly where an uninterrupted run ends: every step once, the same losses, the same weights."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import build_tiny_shards, kill_group, run, start

from training import checkpoint

STEPS = 8
#: A tiny C3D whose pretext head is wide (hidden 50,000: ~27 MB checkpoints with SGD momentum), so that
#: writing a checkpoint takes long enough to be caught in the act by polling for its temporary file.
ARGS = ["--arch", "c3d", "--base-width", "4", "--num-frames", "4", "--resize", "32", "--crop-size", "32",
        "--speeds", "1,2,4", "--num-clips", "2", "--batch-size", "2", "--num-workers", "0", "--backend", "reference",
        "--hidden", "50000", "--max-steps", str(STEPS), "--ckpt-every", "1", "--warmup-steps", "1",
        "--no-progress", "--device", "cpu"]


def _command(data: Path, out: Path, *, resume: bool) -> list[str]:
    return ["train.py", "pretrain", "--data", str(data), "--out", str(out), *ARGS, *(["--resume"] if resume else [])]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_tiny_shards(tmp_path_factory.mktemp("train-data"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run, and how long it took."""
    out = tmp_path_factory.mktemp("reference") / "run"
    started = time.monotonic()
    returncode, log = run(_command(data, out, resume=False))
    assert returncode == 0, log
    return out, time.monotonic() - started


def _check_after_kill(out: Path) -> int:
    """The invariant after any kill: checkpoint.pt is absent or complete (loads with weights_only=True, its
    step was logged). Returns the checkpoint's step (0 if none)."""
    path = out / "checkpoint.pt"
    if not path.exists():
        return 0
    state = checkpoint.load(path)
    assert 1 <= state["step"] <= STEPS
    logged = {r["step"] for r in _metrics(out)}
    assert set(range(1, state["step"] + 1)) <= logged
    return state["step"]


def _kill_during_checkpoint_write(proc, out: Path, timeout: float = 300) -> Path | None:
    """Once the step-1 checkpoint is in place, poll for the next temporary checkpoint file (step 2's) and
    SIGKILL the job while it is partly written. Returns the partial file, or None if the run ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.0005)
    while proc.poll() is None and time.monotonic() < deadline:
        for tmp in out.glob(".checkpoint.pt.tmp.*"):
            try:
                if tmp.stat().st_size > 0:
                    kill_group(proc)
                    return tmp
            except FileNotFoundError:  # renamed into place between glob and stat
                pass
        time.sleep(0.0005)
    kill_group(proc)
    return None


@pytest.mark.slow
def test_sigkill_mid_epoch_and_mid_checkpoint_then_resume_is_exact(data, reference, tmp_path):
    ref_out, full_s = reference
    out = tmp_path / "run"
    complete_size = (ref_out / "checkpoint.pt").stat().st_size
    history = []
    for seed in ("checkpoint-write", 0, 1, 2):
        proc = start(_command(data, out, resume=(out / "checkpoint.pt").exists()))
        if seed == "checkpoint-write":
            partial = _kill_during_checkpoint_write(proc, out)
            assert partial is not None, f"the run ended before a checkpoint write could be interrupted: {proc.communicate()[0][-3000:]}"
            assert partial.exists() and partial.stat().st_size < complete_size  # it really died mid-write
            assert _check_after_kill(out) == 1  # so the next run resumes mid-epoch (step 1 of 2 done)
        else:
            try:
                proc.wait(timeout=random.Random(seed).uniform(0.3 * full_s, 0.8 * full_s))
            except Exception:  # noqa: BLE001 -- still running: kill it now
                kill_group(proc)
        history.append((seed, proc.returncode, _check_after_kill(out)))
    assert any(code == -9 for _, code, _ in history), history

    returncode, log = run(_command(data, out, resume=(out / "checkpoint.pt").exists()))
    assert returncode == 0, log
    # Every step exactly once, with the uninterrupted run's losses: no batch lost or repeated, RNG restored.
    ours, theirs = _metrics(out), _metrics(ref_out)
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1)), history
    assert [r["loss"] for r in ours] == pytest.approx([r["loss"] for r in theirs], rel=1e-5, abs=1e-6)
    final, expected = checkpoint.load(out / "checkpoint.pt"), checkpoint.load(ref_out / "checkpoint.pt")
    assert final["step"] == expected["step"] == STEPS
    for name, tensor in expected["model"].items():
        assert torch.allclose(final["model"][name], tensor, rtol=1e-5, atol=1e-6), name


def test_resume_from_a_truncated_real_checkpoint_is_refused(data, reference, tmp_path):
    """A checkpoint cut short (a copy interrupted, a full disk) is an error naming it, not a fresh start."""
    ref_out, _ = reference
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text((ref_out / "config.json").read_text().replace(str(ref_out), str(out)))
    whole = (ref_out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(whole[: len(whole) * 2 // 3])
    (out / "metrics.jsonl").write_text((ref_out / "metrics.jsonl").read_text())
    returncode, log = run(_command(data, out, resume=True), timeout=120)
    assert returncode != 0
    assert "checkpoint.pt cannot be loaded and is refused" in log, log[-2000:]
    assert (out / "checkpoint.pt").stat().st_size == len(whole) * 2 // 3  # not replaced by a restarted run
    assert (out / "metrics.jsonl").read_text() == (ref_out / "metrics.jsonl").read_text()


def test_disk_full_while_checkpointing_is_a_clear_error_and_keeps_the_last_checkpoint(data, reference, tmp_path):
    """The run folder on a 40 MiB filesystem: the first ~27 MB checkpoint fits, the second does not. The run
    stops with an error naming the checkpoint and the cause; the step-1 checkpoint is intact, no partial file
    is left. Without mount rights, RLIMIT_FSIZE makes the first write fail instead (no checkpoint at all)."""
    from reliability_helpers import tiny_filesystem

    with tiny_filesystem(tmp_path / "fs", "40m") as mounted:
        out = tmp_path / "fs" / "run"
        proc = start(_command(data, out, resume=False), limit_fsize=None if mounted else 5_000_000)
        log = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode != 0
        assert "could not write checkpoint" in log and str(out / "checkpoint.pt") in log, log[-3000:]
        assert ("No space left on device" if mounted else "File too large") in log
        assert not list(out.glob(".checkpoint.pt.tmp*"))
        if mounted:
            assert checkpoint.load(out / "checkpoint.pt")["step"] == 1
        else:
            assert not (out / "checkpoint.pt").exists()
