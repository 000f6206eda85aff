"""train.py's answers to a new user's mistakes (training/errors.py): one line on stderr, ``train.py: error: ...``,
naming the option or file, exit status 2, a traceback only with ``--debug``; bugs keep their traceback. And what a
run left out (videos the sampler excludes, bad samples skipped with ``--skip-bad-samples``) is said on the console
and counted in summary.json / eval.json (training/data_report.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import QUIET, REPO, TINY_DATA, TINY_MODEL, build_motion_shards

from preprocess import build_shards
from shardformat import index_path, read_index
from synthetic.motion import write_motion_dataset
from training import checkpoint
from training.errors import UsageError, run_command

sys.path.insert(0, str(REPO))
import train  # train.py lives at the repo root

CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return build_motion_shards(tmp_path_factory.mktemp("errors"))


def _error_line(capsys, argv: list[str]) -> str:
    """Run ``python train.py ARGV`` in this process; its one error line (asserting status 2, no traceback)."""
    assert train.cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("train.py")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err  # one line, the last one said
    assert errors[0].startswith("train.py: error: ")
    return errors[0]


# ---------------------------------------------------------------- each mistake: one line, status 2


def test_missing_data_names_the_option(capsys, tmp_path):
    line = _error_line(capsys, ["pretrain", "--out", str(tmp_path / "o"), *CPU])
    assert "--data" in line and "required" in line


def test_data_that_is_no_folder_names_the_option_and_path(capsys, tmp_path):
    line = _error_line(capsys, ["pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *CPU])
    assert f"--data {tmp_path / 'nope'}: no such folder" in line


def test_a_folder_without_the_split_names_it(capsys, tmp_path, shards):
    line = _error_line(capsys, ["pretrain", "--data", str(shards), "--train-split", "val", "--out", str(tmp_path / "o"), *CPU])
    assert f"--data {shards}" in line and "'val'" in line


@pytest.mark.parametrize("option, value, expected", [
    ("--batch-size", "-1", "--batch-size must be >= 1, got -1"),
    ("--eval-batch-size", "0", "--eval-batch-size must be >= 1, got 0"),
    ("--arch", "resnet50", "--arch must be one of c3d, r3d_18, r2plus1d_18, got 'resnet50'"),
    ("--norm", "layer", "--norm must be bn or tgn, got 'layer'"),
    ("--lr", "0", "--lr must be positive, got 0.0"),
    ("--device", "tpu", "--device must be auto, cpu or cuda, got 'tpu'"),
])
def test_a_bad_value_names_its_option(capsys, tmp_path, option, value, expected):
    line = _error_line(capsys, ["pretrain", "--data", str(tmp_path), *CPU, option, value])
    assert line == f"train.py: error: {expected}"


def test_a_clip_setting_refused_by_the_loader_config_names_its_options(capsys, tmp_path):
    line = _error_line(capsys, ["pretrain", "--data", str(tmp_path), "--speeds", "-1,1", "--num-clips", "3", *CPU])
    assert line.startswith("train.py: error: --num-clips, --speeds: num_clips must be in")
    line = _error_line(capsys, ["pretrain", "--data", str(tmp_path), "--resize", "64", "--crop-size", "96", *CPU])
    assert line.startswith("train.py: error: --crop-size, --resize: ")


def test_init_on_pretrain_is_refused_not_ignored(capsys, tmp_path):
    line = _error_line(capsys, ["pretrain", "--data", str(tmp_path), "--init", str(tmp_path / "x.pt"), *CPU])
    assert "--init is for finetune and eval" in line


def test_a_wrong_option_value_type_is_one_line_too(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        train.cli(["pretrain", "--data", str(tmp_path), "--speeds", "1,two", *CPU])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("train.py pretrain: error: argument --speeds: ") and "'1,two'" in err


@pytest.mark.parametrize("mode", ["finetune", "eval"])
def test_a_missing_checkpoint_names_the_option_and_file(capsys, tmp_path, shards, mode):
    path = tmp_path / "missing.pt"
    line = _error_line(capsys, [mode, "--data", str(shards), "--init", str(path), "--out", str(tmp_path / "o"), *CPU])
    assert line == f"train.py: error: --init {path}: no such file (a checkpoint.pt written by train.py is needed)"


def _checkpoint_bytes(tmp_path: Path) -> bytes:
    return checkpoint.save_atomic({"model": {"w": torch.arange(5000.0)}, "step": 3}, tmp_path / "good.pt").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_checkpoint_is_one_line_without_torchs_weights_only_advice(capsys, tmp_path, shards, damage):
    good = _checkpoint_bytes(tmp_path)
    path = tmp_path / "damaged.pt"
    path.write_bytes({"truncated": good[: len(good) // 2], "empty": b"", "garbage": bytes(range(256)) * 16}[damage])
    line = _error_line(capsys, ["finetune", "--data", str(shards), "--init", str(path), "--out", str(tmp_path / "o"), *CPU])
    assert line.startswith(f"train.py: error: --init {path} cannot be loaded and is refused: the file is truncated or corrupt (")
    assert "weights_only" not in line and "safe_globals" not in line
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_holding_other_objects_is_refused_without_allowlist_advice(capsys, tmp_path, shards):
    path = tmp_path / "numpy.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "step": np.float64(3.0)}, path)  # harmless, but not a tensor or plain type
    line = _error_line(capsys, ["eval", "--data", str(shards), "--init", str(path), "--out", str(tmp_path / "o"), *CPU])
    assert f"--init {path} cannot be loaded and is refused: it holds a Python object (numpy." in line
    assert "nothing in it was run" in line
    assert "weights_only" not in line and "safe_globals" not in line and "trust" not in line


def test_resume_without_a_run_names_the_missing_file(capsys, tmp_path):
    line = _error_line(capsys, ["pretrain", "--out", str(tmp_path / "run"), "--resume", *CPU])
    assert line == f"train.py: error: --resume: {tmp_path / 'run' / 'config.json'} not found: no run to resume in --out {tmp_path / 'run'}"


def test_resume_before_the_first_checkpoint_says_to_start_again(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    line = _error_line(capsys, ["pretrain", "--out", str(tmp_path / "run"), "--resume", *CPU])
    assert f"{tmp_path / 'run' / 'checkpoint.pt'} not found" in line and "without --resume" in line


def _truncated_copy(shards: Path, dest: Path, keep: dict[str, int]) -> dict[str, list[str]]:
    """A copy of ``shards`` whose ``split`` tar is cut right before its ``keep[split]``-th sample (the .idx kept,
    as a copy cut short in transfer leaves it); the keys of the samples cut off, per split."""
    shutil.copytree(shards, dest)
    lost = {}
    for split, count in keep.items():
        (tar,) = (dest / "shards").glob(f"{split}-*.tar")
        index = read_index(index_path(tar))
        cut = min(m.offset for m in index[count]) - 512  # the tar header of the first member lost
        with open(tar, "r+b") as f:
            f.truncate(cut)
        lost[split] = sorted(member.name.split(".")[0] for sample in index[count:] for member in sample[:1])
    return lost


def test_a_truncated_shard_is_one_line_naming_the_shard(capsys, tmp_path, shards):
    _truncated_copy(shards, tmp_path / "cut", {"train": 8})
    line = _error_line(capsys, ["pretrain", "--data", str(tmp_path / "cut"), "--out", str(tmp_path / "o"), *TINY_DATA, *TINY_MODEL,
                                *QUIET, *CPU, "--max-steps", "1"])
    assert f"in shard {tmp_path / 'cut' / 'shards'}/train-000000.tar: json member" in line and "lies outside" in line
    assert "--skip-bad-samples" in line


def test_debug_shows_the_traceback(tmp_path):
    argv = ["pretrain", "--data", str(tmp_path), "--batch-size", "-1", *CPU, "--debug"]
    with pytest.raises(UsageError, match="--batch-size must be >= 1"):
        train.cli(argv)


def test_run_command_reports_user_errors_and_lets_bugs_through(capsys):
    def mistake():
        raise UsageError("--x must be\n  positive")

    assert run_command(mistake, prog="p") == 2
    assert capsys.readouterr().err == "p: error: --x must be positive\n"
    with pytest.raises(ZeroDivisionError):  # a bug: its traceback is kept
        run_command(lambda: 1 / 0, prog="p")
    assert run_command(lambda: None, prog="p") == 0


def test_the_real_command_line(tmp_path):
    """``python train.py``: status 2 and one line on stderr; with --debug the traceback (status 1)."""
    argv = [sys.executable, str(REPO / "train.py"), "finetune", "--data", str(tmp_path), "--init", str(tmp_path / "none.pt")]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"train.py: error: --init {tmp_path / 'none.pt'}: no such file (a checkpoint.pt written by train.py is needed)"]
    debug = subprocess.run([*argv, "--debug"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "training.errors.UsageError: --init" in debug.stderr


# ---------------------------------------------------------------- what a run left out, in its JSON


@pytest.fixture(scope="module")
def mixed_lengths(tmp_path_factory) -> Path:
    """Labelled shards with 24-frame and 12-frame videos (one of each per class and split). At T=8, speeds
    -2,-1,1,2 and K=3 (TINY_DATA) a 12-frame video fits only speeds +-1, so pretrain mode excludes it."""
    root = tmp_path_factory.mktemp("mixed")
    long = write_motion_dataset(root / "long", train_per_class=1, test_per_class=1, unlabeled=0, size=32, num_frames=24, seed=0)
    short = write_motion_dataset(root / "short", train_per_class=1, test_per_class=1, unlabeled=0, size=32, num_frames=12, seed=1)
    for split in ("train", "test"):
        for video in short[split].rglob("*.mp4"):
            video.rename(long[split] / video.parent.name / f"short_{video.name}")
        build_shards(long[split], root / "shards", split=split, labels_from_dirs=True, short_side=32, min_frames=8, progress=False)
    return root / "shards"


def test_excluded_videos_are_said_and_counted_in_summary_and_eval_json(tmp_path, mixed_lengths, capsys):
    out = tmp_path / "pre"
    summary = train.main(["pretrain", "--data", str(mixed_lengths), "--out", str(out), *TINY_DATA, *TINY_MODEL, *QUIET, *CPU,
                          "--max-steps", "1", "--arch", "c3d"])
    said = " ".join(capsys.readouterr().out.split())
    assert "train split, pretrain mode: excluded 6 of 12 videos, 6 too short for 3 distinct speeds: 12 frames fit 2 of" in said
    samples = summary["samples"]
    assert json.loads((out / "summary.json").read_text())["samples"] == samples
    assert (samples["videos"], samples["used"], samples["excluded"], samples["skipped"]) == (12, 6, 6, 0)
    ((reason, count),) = samples["excluded_reasons"].items()
    assert count == 6 and reason.startswith("too short for 3 distinct speeds: 12 frames fit 2 of")

    results = train.main(["eval", "--data", str(mixed_lengths), "--init", str(out / "checkpoint.pt"), *TINY_DATA, *QUIET, *CPU])
    assert json.loads((out / "eval.json").read_text())["samples"] == results["samples"]
    counts = {(split, mode): (r["videos"], r["used"], r["excluded"]) for split, modes in results["samples"].items() for mode, r in modes.items()}
    # pretext accuracy on the long test videos only; clip accuracy and retrieval (T=8 fits 12 frames) on all of them
    assert counts == {("test", "pretrain"): (12, 6, 6), ("test", "eval"): (12, 12, 0), ("train", "eval"): (12, 12, 0)}
    assert results["retrieval"]["queries"] == 12 and results["retrieval"]["gallery"] == 12


def test_too_few_usable_videos_says_what_was_excluded(capsys, tmp_path, mixed_lengths):
    line = _error_line(capsys, ["pretrain", "--data", str(mixed_lengths), "--out", str(tmp_path / "o"), *TINY_DATA, *TINY_MODEL,
                                *QUIET, *CPU, "--batch-size", "7"])
    assert line.startswith(f"train.py: error: --data {mixed_lengths} split 'train': no full batch of --batch-size 7 per rank: "
                           "6 of 12 videos usable in pretrain mode; 6 excluded: 6 too short for 3 distinct speeds")
    line = _error_line(capsys, ["pretrain", "--data", str(mixed_lengths), "--out", str(tmp_path / "o"), *TINY_DATA, *TINY_MODEL,
                                *QUIET, *CPU, "--num-frames", "13"])
    assert "no usable video: 0 of 12 videos usable in pretrain mode; 12 excluded" in line and "lower --num-frames or --num-clips" in line


def test_skipped_bad_samples_are_counted_in_summary_and_eval_json(tmp_path, shards):
    lost = _truncated_copy(shards, tmp_path / "cut", {"train": 8, "test": 4})
    data = str(tmp_path / "cut")
    out = tmp_path / "pre"
    summary = train.main(["pretrain", "--data", data, "--out", str(out), "--skip-bad-samples", *TINY_DATA, *TINY_MODEL, *QUIET, *CPU,
                          "--max-steps", "1", "--arch", "c3d"])
    samples = summary["samples"]
    assert (samples["videos"], samples["used"], samples["skipped"]) == (8, 8, 4)
    assert [s["key"] for s in samples["skipped_samples"]] == lost["train"]
    assert all("lies outside" in s["reason"] and s["shard"].endswith("train-000000.tar") for s in samples["skipped_samples"])
    assert json.loads((out / "summary.json").read_text())["samples"] == samples

    results = train.main(["eval", "--data", data, "--init", str(out / "checkpoint.pt"), "--skip-bad-samples", *TINY_DATA, *QUIET, *CPU])
    skipped = {(split, mode): [s["key"] for s in r["skipped_samples"]] for split, modes in results["samples"].items() for mode, r in modes.items()}
    assert skipped == {("test", "pretrain"): lost["test"], ("test", "eval"): lost["test"], ("train", "eval"): lost["train"]}
    assert results["samples"]["test"]["eval"]["skipped"] == 2 and results["retrieval"]["queries"] == 4
