"""Miniature copies of the official UCF101, HMDB51 and Kinetics layouts, with the official file names and
formats (and their quirks), filled with tiny synthetic videos. What each tree should yield is returned
beside it, so the tests compare counts and labels exactly."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from synthetic.videos import write_lavfi_video

#: UCF101 classes in classInd order (as in the real file: 1-based, alphabetical by the published names).
UCF_CLASSES = ("ApplyEyeMakeup", "BlowDryHair", "HandstandPushups")


def _video(path: Path, cache: dict, *, num_frames: int) -> None:
    """A tiny video at ``path``: rendered once per extension, then copied (the build never dedups by content)."""
    ext = path.suffix
    if ext not in cache:
        cache[ext] = write_lavfi_video(path, num_frames=num_frames, width=64, height=48,
                                       vcodec="mpeg4" if ext == ".avi" else "libx264")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache[ext], path)


def ucf101_tree(root: Path, *, num_frames: int = 32) -> dict:
    """``root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` + ``root/ucfTrainTestlist/`` with CRLF line endings.

    Per class: groups 8 and 9 train, group 1 test in split 1 (split 2: group 8 test, groups 1 and 9 train).
    HandstandPushups keeps the real dataset's quirk: its files are named ``v_HandStandPushups_...``.
    Returns ``{"train": {rel: label}, "test": {rel: label}, "split2_test": [...]}`` for split 1 (labels 0-based).
    """
    cache: dict = {}
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    crlf = lambda lines: "".join(f"{line}\r\n" for line in lines)  # noqa: E731
    (lists / "classInd.txt").write_text(crlf(f"{i} {c}" for i, c in enumerate(UCF_CLASSES, 1)), newline="")
    expected: dict = {"train": {}, "test": {}, "split2_test": []}
    splits = {1: ({8, 9}, {1}), 2: ({1, 9}, {8}), 3: ({1, 8}, {9})}
    for label, cls in enumerate(UCF_CLASSES):
        stem = "HandStandPushups" if cls == "HandstandPushups" else cls
        for group in (1, 8, 9):
            _video(root / "UCF-101" / cls / f"v_{stem}_g{group:02d}_c01.avi", cache, num_frames=num_frames)
        for s, (train, test) in splits.items():
            rows_train = [f"{cls}/v_{stem}_g{g:02d}_c01.avi {label + 1}" for g in sorted(train)]
            rows_test = [f"{cls}/v_{stem}_g{g:02d}_c01.avi" for g in sorted(test)]
            with open(lists / f"trainlist{s:02d}.txt", "a", newline="") as f:
                f.write(crlf(rows_train))
            with open(lists / f"testlist{s:02d}.txt", "a", newline="") as f:
                f.write(crlf(rows_test))
            if s == 1:
                expected["train"].update({f"UCF-101/{r.split()[0]}": label for r in rows_train})
                expected["test"].update({f"UCF-101/{r}": label for r in rows_test})
            if s == 2:
                expected["split2_test"] += [f"UCF-101/{r}" for r in rows_test]
    # On disk but in no list (the real archive has none, but a stray file must not become an input).
    _video(root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g30_c01.avi", cache, num_frames=num_frames)
    return expected


#: HMDB51 classes (real names; some hold '_') and one video per split value.
HMDB_CLASSES = ("brush_hair", "cartwheel", "fall_floor")


def hmdb51_tree(root: Path, *, num_frames: int = 32) -> dict:
    """``root/<class>/<video>.avi`` + ``root/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt``.

    Each class has three videos marked 1 (train), 2 (test) and 0 (unused) in split 1, written as the real
    files are (``name.avi 1 `` with a trailing space); splits 2 and 3 rotate the marks. Returns split 1's
    ``{"train"/"test": {rel: label}}``, the number of unused entries and their paths.
    """
    cache: dict = {}
    lists = root / "testTrainMulti_7030_splits"
    lists.mkdir(parents=True)
    expected: dict = {"train": {}, "test": {}, "unused": 0, "unused_paths": set()}
    for label, cls in enumerate(HMDB_CLASSES):  # already sorted: HMDB51's labels are the sorted class names
        names = [f"Some_Title_{cls}_f_cm_np1_ri_med_{i}.avi" for i in range(3)]
        names[0] = f"#122_{names[0]}"  # real names start with '#', '(' or hold '&' too
        for name in names:
            _video(root / cls / name, cache, num_frames=num_frames)
        for s in (1, 2, 3):
            marks = ["1", "2", "0"][s - 1:] + ["1", "2", "0"][: s - 1]  # each split uses each video differently
            (lists / f"{cls}_test_split{s}.txt").write_text("".join(f"{n} {m} \n" for n, m in zip(names, marks)))
        expected["train"][f"{cls}/{names[0]}"] = label
        expected["test"][f"{cls}/{names[1]}"] = label
        expected["unused"] += 1
        expected["unused_paths"].add(f"{cls}/{names[2]}")
    return expected


KINETICS_CLASSES = ("abseiling", "air drumming", "zumba")


def kinetics_tree(root: Path, *, num_frames: int = 32) -> dict:
    """Kinetics-400-style ``root/annotations/{train,validate,test}.csv`` and videos named
    ``<youtube_id>_<start:06d>_<end:06d>.mp4``: train in class folders (spaces kept), val and test flat.
    One train and one val row have no file (an incomplete download); the test CSV has no label column.
    Returns per split ``{rel: label or None}`` of the clips on disk and the list of missing file names.
    """
    cache: dict = {}
    ann = root / "annotations"
    ann.mkdir(parents=True)
    expected: dict = {"train": {}, "val": {}, "test": {}, "missing": {"train": [], "val": []}}
    rows: dict[str, list[str]] = {"train": [], "validate": [], "test": []}
    for label, cls in enumerate(KINETICS_CLASSES):
        for i in range(2):
            yt, start = f"tr{label}{i}-_Ab", 10 * i + 3
            name = f"{yt}_{start:06d}_{start + 10:06d}.mp4"
            rows["train"].append(f'"{cls}",{yt},{start},{start + 10},train' if " " in cls else f"{cls},{yt},{start},{start + 10},train")
            if label == 1 and i == 1:
                expected["missing"]["train"].append(name)
                continue
            _video(root / "train" / cls / name, cache, num_frames=num_frames)
            expected["train"][f"train/{cls}/{name}"] = label
        yt = f"va{label}xYz_0"
        name = f"{yt}_000000_000010.mp4"
        rows["validate"].append(f'"{cls}",{yt},0,10,val' if " " in cls else f"{cls},{yt},0,10,val")
        if label == 2:
            expected["missing"]["val"].append(name)
        else:
            _video(root / "val" / name, cache, num_frames=num_frames)
            expected["val"][f"val/{name}"] = label
    for i in range(2):
        yt = f"te{i}QQ"
        rows["test"].append(f"{yt},5,15,test")
        _video(root / "test" / f"{yt}_000005_000015.mp4", cache, num_frames=num_frames)
        expected["test"][f"test/{yt}_000005_000015.mp4"] = None
    header = "label,youtube_id,time_start,time_end,split"
    (ann / "train.csv").write_text("\n".join([header, *rows["train"]]) + "\n")
    (ann / "validate.csv").write_text("\n".join([header, *rows["validate"]]) + "\n")
    (ann / "test.csv").write_text("\n".join(["youtube_id,time_start,time_end,split", *rows["test"]]) + "\n")
    return expected


def shard_samples(out: Path, split: str) -> dict[str, dict]:
    """``source -> sample JSON`` of every sample in ``out/shards/{split}-*.tar``."""
    samples = {}
    for tar in sorted((out / "shards").glob(f"{split}-*.tar")):
        with tarfile.open(tar) as t:
            for member in t.getmembers():
                if member.name.endswith(".json"):
                    info = json.loads(t.extractfile(member).read())
                    assert info["source"] not in samples, info["source"]
                    samples[info["source"]] = info
    return samples
