"""docs/reproduce.md cannot rot: its UCF101 recipe runs end to end on a miniature official UCF101 tree (tiny
sizes appended to each command), every other documented command parses, and its wall-time table is what
``python -m training.presets`` computes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import train
from dataset_trees import ucf101_tree
from preprocess import cli as preprocess_cli
from train_helpers import QUIET, REPO, TINY_DATA, TINY_MODEL
from training.config import build_parser
from training.presets import estimate_table, preset_values

DOC = REPO / "docs" / "reproduce.md"
TINY_PREPROCESS = ["--short-side", "32", "--min-frames", "8", "--workers", "2", "--no-progress"]
TINY_TRAIN = [*TINY_DATA, *TINY_MODEL, *QUIET, "--max-steps", "2"]


def recipe(tag: str) -> list[list[str]]:
    """The commands of the ```` ```bash recipe:TAG ```` block, one argv per command."""
    blocks = re.findall(r"^```bash recipe:(\S+)\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    (body,) = [text for name, text in blocks if name == tag]
    return [shlex.split(line, comments=True) for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def split_command(argv: list[str], env: dict[str, str]) -> tuple[str, list[str]]:
    """``preprocess ARGS`` / ``python train.py ARGS`` -> (program, ARGS with $VARIABLES substituted)."""
    args = [env.get(a[1:], a) if a.startswith("$") else a for a in argv]
    if args[0] == "preprocess":
        return "preprocess", args[1:]
    assert args[:2] == ["python", "train.py"], f"undocumented program in docs/reproduce.md: {argv}"
    return "train", args[2:]


def test_the_documented_ucf101_recipe_runs_end_to_end(tmp_path, monkeypatch):
    expected = ucf101_tree(tmp_path / "UCF101", num_frames=32)
    monkeypatch.chdir(tmp_path)  # the commands write data/ and runs/ relative to where they run
    commands = recipe("ucf101")
    programs = [split_command(c, {"UCF101_ROOT": str(tmp_path / "UCF101")}) for c in commands]
    assert [p for p, _ in programs] == ["preprocess"] + ["train"] * 6
    for program, args in programs:
        if program == "preprocess":
            assert preprocess_cli.main(args + TINY_PREPROCESS) == 0
        else:
            train.main(args + TINY_TRAIN)

    data = tmp_path / "data" / "ucf101_s1"
    manifest = json.loads((data / "manifest.json").read_text())
    assert {s: e["videos"] for s, e in manifest["splits"].items()} == {"train": len(expected["train"]), "test": len(expected["test"])}
    pre = json.loads((tmp_path / "runs/ucf101_pre/eval.json").read_text())
    assert pre["kind"] == "pretrain" and pre["retrieval"]["queries"] == 3 and pre["retrieval"]["gallery"] == 6
    for run in ("ucf101_ft", "ucf101_linear"):
        result = json.loads((tmp_path / "runs" / run / "eval.json").read_text())
        assert result["kind"] == "finetune" and result["num_videos"] == 3 and 0 <= result["video_acc"] <= 1
        config = json.loads((tmp_path / "runs" / run / "config.json").read_text())
        assert config["optim"]["freeze_backbone"] is (run == "ucf101_linear")
        assert config["model"]["norm"] == "tgn"  # the paper preset's pretraining network, carried by the checkpoint
        assert list((tmp_path / "runs" / run).glob("events.out.tfevents.*"))


@pytest.mark.parametrize("tag", ["ucf101", "hmdb51", "kinetics"])
def test_every_documented_command_parses(tag):
    env = {"UCF101_ROOT": "u", "HMDB51_ROOT": "h", "KINETICS_ROOT": "k"}
    for argv in recipe(tag):
        program, args = split_command(argv, env)
        if program == "preprocess":
            parsed = preprocess_cli.parser().parse_args(args)
            assert parsed.dataset == tag and parsed.src == Path(env[f"{tag.upper()}_ROOT"])
        else:
            ns = vars(build_parser().parse_args(args))
            assert ns["run.out"] if ns["mode"] != "eval" else ns["run.init"]
            preset_values(ns["mode"], ns.get("preset"))  # an unknown preset for the mode raises


def test_documented_wall_times_are_what_the_estimator_computes():
    rows = {m[0]: (m[1], float(m[2])) for m in re.findall(r"^\| ([a-z][^|]*?) \| ([^|]*?) \| ([\d.]+) \|$", DOC.read_text(), flags=re.M)}
    computed = {step: (arithmetic, round(hours, 1)) for step, arithmetic, hours in estimate_table("r3d_18")}
    assert rows == computed
