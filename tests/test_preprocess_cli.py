"""The `preprocess` command line: exit statuses, error messages, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess.cli import main
from synthetic.videos import write_lavfi_video


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocess", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    write_lavfi_video(root / "good.mp4", num_frames=16)
    (root / "bad.mp4").write_bytes(b"")
    return root


def test_help_describes_the_options():
    proc = _cli("--help")
    assert proc.returncode == 0
    for option in ("--split", "--labels-from-dirs", "--short-side", "--fps", "--codec", "--gop", "--max-frames", "--min-frames",
                   "--workers", "--shard-max-count", "--shard-max-bytes", "--seed", "--strict", "--label-map", "--no-progress",
                   "--dataset", "--split-id"):
        assert option in proc.stdout


def test_run_prints_summary_and_accounting(src, tmp_path):
    proc = _cli(src, tmp_path / "out", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "1 + 1 = 2 (ok)" in proc.stderr and "empty file" in proc.stderr  # written + rejected = inputs, reasons
    assert "transcoding" in proc.stderr  # progress bar
    assert (tmp_path / "out/shards/train-000000.tar").is_file()


def test_strict_fails_on_any_reject(src, tmp_path, capsys):
    assert main([str(src), str(tmp_path / "out"), "--strict", "--no-progress", "--workers", "1"]) == 1
    assert "1 inputs rejected" in capsys.readouterr().err
    assert (tmp_path / "out/shards/train-000000.tar").is_file()  # the shards are still written


def test_nothing_written_is_a_failure(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.mp4").write_bytes(b"junk")
    assert main([str(tmp_path / "src"), str(tmp_path / "out"), "--no-progress"]) == 1
    assert "no video was written" in capsys.readouterr().err


@pytest.mark.parametrize("case,message", [
    ("missing_src", "does not exist"),
    ("empty_src", "holds no input files"),
    ("empty_list", "has no rows"),
    ("out_is_file", "is not a folder"),
    ("out_not_writable", "is not writable"),
    ("bad_label_map", "--label-map"),
    ("bad_split", "split name"),
])
def test_unusable_job_is_a_clear_error(tmp_path, capsys, src, case, message):
    out, extra = tmp_path / "out", []
    source = src
    if case == "missing_src":
        source = tmp_path / "nope"
    elif case == "empty_src":
        source = tmp_path / "empty"
        source.mkdir()
        (source / "readme.txt").write_text("sidecars only")
    elif case == "empty_list":
        source = tmp_path / "list.csv"
        source.write_text("path,label\n")
    elif case == "out_is_file":
        out.write_text("")
    elif case == "out_not_writable":
        out = Path("/proc/preprocess-out")
    elif case == "bad_label_map":
        (tmp_path / "map.json").write_text("[1, 2]")
        extra = ["--label-map", str(tmp_path / "map.json")]
    elif case == "bad_split":
        extra = ["--split", "train-1"]
    assert main([str(source), str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preprocess: error:") and message in err


def test_label_map_file_forces_labels(tmp_path):
    write_lavfi_video(tmp_path / "src/walk/a.mp4", num_frames=16)
    (tmp_path / "map.json").write_text(json.dumps({"run": 0, "walk": 3}))
    proc = _cli(tmp_path / "src", tmp_path / "out", "--labels-from-dirs", "--label-map", tmp_path / "map.json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out/manifest.json").read_text())["label_map"] == {"run": 0, "walk": 3}
