"""``preprocess --dataset {ucf101,hmdb51,kinetics}``: miniature official layouts in, every official split out
with the official labels; malformed official files are clear errors naming the file and line."""

from __future__ import annotations

import json

import pytest

from dataset_trees import HMDB_CLASSES, KINETICS_CLASSES, UCF_CLASSES, hmdb51_tree, kinetics_tree, shard_samples, ucf101_tree
from preprocess.cli import main
from preprocess.datasets import DatasetError, read_dataset

TINY = ["--short-side", "32", "--min-frames", "8", "--workers", "2", "--no-progress"]


def _labels(out, split) -> dict:
    return {source: info["label"] for source, info in shard_samples(out, split).items()}


def _rejects(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines() if line.strip()]


def test_ucf101_split1_builds_train_and_test_with_classind_labels(tmp_path, capsys):
    expected = ucf101_tree(tmp_path / "ucf")
    out = tmp_path / "out"
    args = [str(tmp_path / "ucf"), str(out), "--dataset", "ucf101", "--split-id", "1", *TINY]
    assert main(args) == 0
    assert "ucf101 split 1: 3 classes; entries: train 6, test 3" in capsys.readouterr().err
    assert main(args) == 0  # a rerun finds both splits complete
    assert capsys.readouterr().err.count("already complete") == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["label_map"] == {c: i for i, c in enumerate(UCF_CLASSES)}
    assert set(manifest["splits"]) == {"train", "test"}
    assert _labels(out, "train") == expected["train"] and _labels(out, "test") == expected["test"]
    assert not _rejects(out)
    names = {info["label_name"] for info in shard_samples(out, "test").values()}
    assert names == set(UCF_CLASSES)  # HandStandPushups files are labelled by their folder's classInd name


def test_ucf101_split_id_picks_the_list_pair(tmp_path):
    expected = ucf101_tree(tmp_path / "ucf")
    official = read_dataset("ucf101", tmp_path / "ucf", split_id=2)
    assert [i.rel for i in official.splits["test"]] == expected["split2_test"]
    assert len(official.splits["train"]) == 6
    with pytest.raises(DatasetError, match="has no split 4"):
        read_dataset("ucf101", tmp_path / "ucf", split_id=4)


def test_hmdb51_marks_1_2_0_are_train_test_unused(tmp_path):
    expected = hmdb51_tree(tmp_path / "hmdb")
    out = tmp_path / "out"
    official = read_dataset("hmdb51", tmp_path / "hmdb", split_id=1)
    assert official.unused == expected["unused"] == 3
    assert official.label_map == {c: i for i, c in enumerate(sorted(HMDB_CLASSES))}
    assert main([str(tmp_path / "hmdb"), str(out), "--dataset", "hmdb51", *TINY]) == 0
    assert _labels(out, "train") == expected["train"] and _labels(out, "test") == expected["test"]
    assert not _rejects(out)
    split2 = read_dataset("hmdb51", tmp_path / "hmdb", split_id=2)
    assert {i.rel for i in split2.splits["train"]} == expected["unused_paths"]  # split 2 trains on split 1's unused videos


def test_kinetics_missing_clips_are_counted_and_listed_not_fatal(tmp_path, capsys):
    expected = kinetics_tree(tmp_path / "k400")
    out = tmp_path / "out"
    assert main([str(tmp_path / "k400"), str(out), "--dataset", "kinetics", *TINY]) == 0
    err = capsys.readouterr().err
    assert "kinetics split 1: 3 classes; entries: train 6, val 3, test 2" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["label_map"] == {c: i for i, c in enumerate(sorted(KINETICS_CLASSES))}
    assert {s: (e["inputs"], e["videos"], e["rejected"]) for s, e in manifest["splits"].items()} == {
        "train": (6, 5, 1), "val": (3, 2, 1), "test": (2, 2, 0)}
    for split in ("train", "val", "test"):
        assert _labels(out, split) == expected[split], split
    rejects = {(r["split"], r["path"]): r["reason"] for r in _rejects(out)}
    assert set(rejects) == {(s, name) for s, names in expected["missing"].items() for name in names}
    assert all(reason.startswith("file not found") for reason in rejects.values())


@pytest.mark.parametrize("damage,message", [
    ("classind", "classInd.txt:2: expected '<index> <ClassName>'"),
    ("trainlabel", "trainlist01.txt:1: label 3 contradicts classInd.txt"),
    ("testclass", "testlist01.txt:1: 'Nope/v.avi' is not inside a class folder"),
    ("nolists", "ucfTrainTestlist: missing"),
])
def test_ucf101_malformed_files_name_the_file_and_line(tmp_path, damage, message):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (root / "UCF-101").mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n" + ("two BlowDryHair\r\n" if damage == "classind" else "2 BlowDryHair\r\n"))
    (lists / "trainlist01.txt").write_text(f"ApplyEyeMakeup/v_a.avi {3 if damage == 'trainlabel' else 1}\r\n")
    (lists / "testlist01.txt").write_text("Nope/v.avi\r\n" if damage == "testclass" else "BlowDryHair/v_b.avi\r\n")
    if damage == "nolists":
        for p in lists.iterdir():
            p.unlink()
        lists.rmdir()
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace("'", "'")):
        read_dataset("ucf101", root)


def test_hmdb51_and_kinetics_malformed_files(tmp_path):
    (tmp_path / "hmdb/testTrainMulti_7030_splits").mkdir(parents=True)
    (tmp_path / "hmdb/testTrainMulti_7030_splits/wave_test_split1.txt").write_text("a.avi 1 \nb.avi 3 \n")
    with pytest.raises(DatasetError, match=r"wave_test_split1.txt:2: expected '<video>.avi 0\|1\|2'"):
        read_dataset("hmdb51", tmp_path / "hmdb")
    (tmp_path / "k").mkdir()
    (tmp_path / "k/train.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,x,1,11,training\n")
    with pytest.raises(DatasetError, match="train.csv:2: split 'training' is not one of"):
        read_dataset("kinetics", tmp_path / "k")
    (tmp_path / "k/train.csv").write_text("something,else\n")
    with pytest.raises(DatasetError, match="no Kinetics annotation CSV"):
        read_dataset("kinetics", tmp_path / "k")


def test_dataset_conflicts_with_split_and_label_options(tmp_path, capsys):
    ucf101_tree(tmp_path / "ucf")
    assert main([str(tmp_path / "ucf"), str(tmp_path / "out"), "--dataset", "ucf101", "--split", "val", *TINY]) == 2
    assert "drop --split" in capsys.readouterr().err
    assert main([str(tmp_path / "ucf"), str(tmp_path / "out"), "--split-id", "2", *TINY]) == 2
    assert "--split-id needs --dataset" in capsys.readouterr().err
