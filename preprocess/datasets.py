"""Official dataset layouts in, the inputs of each of their splits out (for ``preprocess --dataset``).

Each reader turns a dataset as it unpacks (its video folders and its own split files, read exactly as
published) into ``{split: [Input, ...]}`` plus the official label map, which ``build_shards`` then
consumes like any other list of inputs. Nothing is transcoded here and nothing is dropped silently:

- an entry whose video is not on disk stays an input and the build rejects it ("file not found"), so
  it is counted in the summary and listed in ``rejects.jsonl``;
- entries the official files mark as unused (HMDB51's ``0``) are not inputs; they are counted in
  :attr:`DatasetSplits.unused`;
- a malformed split file is a :class:`DatasetError` naming the file, the line and the reason.

Layouts (ROOT is the folder given on the command line):

- **UCF101**: ``ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and ``ROOT/ucfTrainTestlist/``:
  ``classInd.txt`` (``1 ApplyEyeMakeup``: 1-based index, class name), ``trainlist0N.txt``
  (``Class/file.avi 1``: path and 1-based label), ``testlist0N.txt`` (path only). The published files
  have Windows line endings. Labels are classInd's index minus one.
- **HMDB51**: ``ROOT/<class>/<video>.avi`` and ``ROOT/testTrainMulti_7030_splits/<class>_test_splitN.txt``
  (``video.avi 1``: 1 = train, 2 = test, 0 = unused). HMDB51 publishes no class index: labels are the
  class names in sorted order (the convention of the published evaluation code), 0-based.
- **Kinetics-400/600/700**: annotation CSVs anywhere in ROOT (up to two folders deep) with the header
  ``label,youtube_id,time_start,time_end,split`` (the label column may be absent, as in Kinetics-400's
  first test release); the row's own ``split`` column (``train``, ``val``/``validate``, ``test``)
  picks the split. Videos are named ``<youtube_id>_<start:06d>_<end:06d>.<ext>``, inside class folders
  or flat, anywhere under ROOT. Labels are the class names of all CSVs in sorted order, 0-based.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .inputs import SIDECAR_EXTENSIONS, Input, PreprocessError

DATASETS = ("ucf101", "hmdb51", "kinetics")
#: ``--split-id`` values each dataset publishes (Kinetics has one fixed train/val/test partition).
SPLIT_IDS = {"ucf101": (1, 2, 3), "hmdb51": (1, 2, 3), "kinetics": (1,)}


class DatasetError(PreprocessError):
    """An official split or annotation file is missing or malformed."""


@dataclass(frozen=True)
class DatasetSplits:
    """What one official layout holds for one split id."""

    dataset: str
    """ucf101, hmdb51 or kinetics."""
    split_id: int
    """The official split (1-3 for UCF101 and HMDB51; always 1 for Kinetics)."""
    label_map: dict[str, int]
    """Class name -> 0-based label, in the official order."""
    splits: dict[str, list[Input]]
    """Split name (train, test, and val for Kinetics) -> its inputs in the order of the official files."""
    unused: int = 0
    """Entries the official files mark as in no split (HMDB51's ``0``): counted, not inputs."""

    def describe(self) -> str:
        parts = [f"{name} {len(items)}" for name, items in self.splits.items()]
        extra = f", {self.unused} marked unused" if self.unused else ""
        return f"{self.dataset} split {self.split_id}: {len(self.label_map)} classes; entries: {', '.join(parts)}{extra}"


def read_dataset(name: str, root: str | os.PathLike, *, split_id: int = 1) -> DatasetSplits:
    """The splits of dataset ``name`` unpacked in ``root`` (see the module docstring for the layouts)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if split_id not in SPLIT_IDS[name]:
        raise DatasetError(f"{name} has no split {split_id}: expected one of {', '.join(map(str, SPLIT_IDS[name]))}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"ROOT {root} is not a folder")
    reader = {"ucf101": _read_ucf101, "hmdb51": _read_hmdb51, "kinetics": _read_kinetics}[name]
    return reader(root.absolute(), split_id)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line; CRLF and a UTF-8 BOM are tolerated."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing (expected the dataset's official file here)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: missing ({what})")
    return path


# ------------------------------------------------------------------------------------------------ UCF101


def _read_ucf101(root: Path, split_id: int) -> DatasetSplits:
    videos = _require_dir(root / "UCF-101", "UCF101's video folder, as unpacked from UCF101.rar")
    lists = _require_dir(root / "ucfTrainTestlist", "UCF101's split files, as unpacked from UCF101TrainTestSplits-RecognitionTask.zip")

    class_ind = lists / "classInd.txt"
    label_map: dict[str, int] = {}
    for n, line in _lines(class_ind):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise DatasetError(f"{class_ind}:{n}: expected '<index> <ClassName>', got {line!r}")
        index, cls = int(fields[0]), fields[1]
        if cls in label_map:
            raise DatasetError(f"{class_ind}:{n}: class {cls!r} listed twice")
        label_map[cls] = index - 1
    if sorted(label_map.values()) != list(range(len(label_map))):
        raise DatasetError(f"{class_ind}: indices must be 1..{len(label_map)} without gaps or repeats")
    by_folder = {cls.lower(): cls for cls in label_map}

    def entry(list_path: Path, n: int, rel: str) -> Input:
        folder = rel.split("/", 1)[0] if "/" in rel else None
        if folder is None or folder.lower() not in by_folder:
            raise DatasetError(f"{list_path}:{n}: {rel!r} is not inside a class folder of classInd.txt")
        return Input(videos / rel, f"UCF-101/{rel}", by_folder[folder.lower()])

    train_list, test_list = lists / f"trainlist{split_id:02d}.txt", lists / f"testlist{split_id:02d}.txt"
    train = []
    for n, line in _lines(train_list):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise DatasetError(f"{train_list}:{n}: expected 'Class/file.avi <label>', got {line!r}")
        item = entry(train_list, n, fields[0])
        if int(fields[1]) - 1 != label_map[item.label_name]:
            raise DatasetError(f"{train_list}:{n}: label {fields[1]} contradicts classInd.txt "
                               f"({item.label_name} is {label_map[item.label_name] + 1})")
        train.append(item)
    test = []
    for n, line in _lines(test_list):
        fields = line.split()
        if len(fields) != 1:
            raise DatasetError(f"{test_list}:{n}: expected 'Class/file.avi', got {line!r}")
        test.append(entry(test_list, n, fields[0]))
    return DatasetSplits("ucf101", split_id, label_map, {"train": train, "test": test})


# ------------------------------------------------------------------------------------------------ HMDB51

_HMDB_SPLIT_DIR = "testTrainMulti_7030_splits"


def _read_hmdb51(root: Path, split_id: int) -> DatasetSplits:
    lists = _require_dir(root / _HMDB_SPLIT_DIR, "HMDB51's split files, as unpacked from test_train_splits.rar")
    suffix = f"_test_split{split_id}.txt"
    files = sorted(p for p in lists.iterdir() if p.name.endswith(suffix))
    if not files:
        raise DatasetError(f"{lists}: no <class>{suffix} files")
    classes = [p.name[: -len(suffix)] for p in files]  # class names may hold '_' (brush_hair)
    label_map = {cls: i for i, cls in enumerate(sorted(classes))}
    splits: dict[str, list[Input]] = {"train": [], "test": []}
    unused = 0
    for cls, path in zip(classes, files):
        for n, line in _lines(path):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise DatasetError(f"{path}:{n}: expected '<video>.avi 0|1|2', got {line!r}")
            if fields[1] == "0":
                unused += 1
                continue
            rel = f"{cls}/{fields[0]}"
            splits["train" if fields[1] == "1" else "test"].append(Input(root / rel, rel, cls))
    return DatasetSplits("hmdb51", split_id, label_map, splits, unused)


# ---------------------------------------------------------------------------------------------- Kinetics

_KINETICS_COLUMNS = {"youtube_id", "time_start", "time_end", "split"}
_KINETICS_SPLITS = {"train": "train", "val": "val", "validate": "val", "valid": "val", "test": "test"}


def _annotation_csvs(root: Path) -> list[Path]:
    found = []
    for depth in ("*.csv", "*/*.csv", "*/*/*.csv"):
        for path in sorted(root.glob(depth)):
            try:
                with open(path, newline="", encoding="utf-8-sig") as f:
                    header = next(csv.reader(f), [])
            except (UnicodeDecodeError, csv.Error) as err:
                raise DatasetError(f"{path}: not a readable CSV file ({err})") from None
            if _KINETICS_COLUMNS <= {h.strip() for h in header}:
                found.append(path)
    return found


def _video_files(root: Path) -> dict[str, list[Path]]:
    """File stem -> every non-sidecar, non-hidden file with that stem under ``root``."""
    stems: dict[str, list[Path]] = defaultdict(list)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() not in SIDECAR_EXTENSIONS:
                stems[path.stem].append(path)
    return stems


def _same_class(folder: str, label: str) -> bool:
    norm = lambda s: re.sub(r"[\s_]+", "_", s.strip().strip('"').lower())  # noqa: E731 (downloaders write ' ' as '_')
    return norm(folder) == norm(label)


def _read_kinetics(root: Path, split_id: int) -> DatasetSplits:
    csvs = _annotation_csvs(root)
    if not csvs:
        raise DatasetError(f"{root}: no Kinetics annotation CSV (header 'label,youtube_id,time_start,time_end,split') "
                           f"in ROOT or two folders below it")
    rows: list[tuple[Path, int, str, str | None, str]] = []  # (csv, line, split, label, file stem)
    for path in csvs:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for record in reader:
                line = reader.line_num
                record = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
                split = _KINETICS_SPLITS.get(record["split"].lower())
                if split is None:
                    raise DatasetError(f"{path}:{line}: split {record['split']!r} is not one of train, val, validate, test")
                try:
                    start, end = int(float(record["time_start"])), int(float(record["time_end"]))
                except ValueError:
                    raise DatasetError(f"{path}:{line}: time_start/time_end must be numbers, got "
                                       f"{record['time_start']!r}, {record['time_end']!r}") from None
                if not record["youtube_id"]:
                    raise DatasetError(f"{path}:{line}: empty youtube_id")
                rows.append((path, line, split, record.get("label") or None, f"{record['youtube_id']}_{start:06d}_{end:06d}"))
    label_map = {name: i for i, name in enumerate(sorted({r[3] for r in rows if r[3] is not None}))}

    stems = _video_files(root)
    splits: dict[str, list[Input]] = {}
    for path, line, split, label, stem in rows:
        found = stems.get(stem, [])
        if len(found) > 1 and label is not None:  # the same clip in several folders: take the one in its class folder
            found = [p for p in found if _same_class(p.parent.name, label)] or found
        if len(found) > 1:
            raise DatasetError(f"{path}:{line}: clip {stem} is ambiguous, found at "
                               + ", ".join(p.relative_to(root).as_posix() for p in found))
        # A clip that is not on disk stays an input under its expected name: the build rejects it as not
        # found, so the summary counts it and rejects.jsonl lists it (Kinetics downloads are never complete).
        video = found[0] if found else root / f"{stem}.mp4"
        splits.setdefault(split, []).append(Input(video, video.relative_to(root).as_posix(), label))
    order = {"train": 0, "val": 1, "test": 2}
    return DatasetSplits("kinetics", split_id, label_map, dict(sorted(splits.items(), key=lambda kv: order[kv[0]])))
