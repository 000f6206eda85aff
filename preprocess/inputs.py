"""What a build reads: the input listing (a folder or a CSV/TSV list), each input's key and label, the
label map, the screening that rejects inputs before any decoding, and the fingerprint of the input set."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .media import Rejection

#: Files in a source folder that are never inputs: hidden files and these sidecar extensions
#: (annotations, subtitles, lists, notes). Every other file is an input and is either written or rejected.
SIDECAR_EXTENSIONS = frozenset(
    ".txt .md .rst .json .jsonl .csv .tsv .xml .yaml .yml .ini .cfg .log .nfo .srt .vtt .ass .ssa .sub .idx .lst .db .sha1 .md5".split()
)
#: Suffixes of a SRC that is a list file rather than a folder.
LIST_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".lst"})


class PreprocessError(Exception):
    """A problem with the job as a whole (unusable SRC/OUT, conflicting parameters): nothing is built."""


@dataclass(frozen=True)
class Input:
    path: Path
    """Absolute path of the source file."""
    rel: str
    """Path relative to SRC (or as written in the list file), with ``/`` separators: the sample's ``source``."""
    label_name: str | None
    key: str = field(init=False)
    """First 16 hex digits of the SHA-1 of ``rel``: stable across runs and machines."""

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.rel.encode("utf-8", "surrogateescape")).hexdigest()
        object.__setattr__(self, "key", digest[:16])


def _is_input_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() not in SIDECAR_EXTENSIONS


def list_folder(src: Path, *, labels_from_dirs: bool, exclude: Path | None = None) -> list[Input]:
    """Every non-hidden, non-sidecar file under ``src`` (recursively, sorted), skipping ``exclude``
    (OUT, when it lies inside SRC). With ``labels_from_dirs`` the label is the top-level folder name."""
    inputs = []
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude))
        for name in sorted(files):
            path = root_path / name
            if not _is_input_file(path) or not (path.is_file() or path.is_symlink()):
                continue
            rel = path.relative_to(src).as_posix()
            label = rel.split("/", 1)[0] if labels_from_dirs and "/" in rel else None
            inputs.append(Input(path.absolute(), rel, label))
    return inputs


def list_file(list_path: Path, *, labels_from_dirs: bool) -> list[Input]:
    """Rows ``path[,label]`` of a CSV (or TSV, by extension) file; paths relative to the list's folder.

    A header row whose first cell is ``path`` is skipped; blank lines and ``#`` comments are ignored.
    Without a label cell and with ``labels_from_dirs``, the label is the file's parent folder name.
    """
    delimiter = "\t" if list_path.suffix.lower() == ".tsv" else ","
    with open(list_path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f, delimiter=delimiter) if row and row[0].strip() and not row[0].lstrip().startswith("#")]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    inputs = []
    for row in rows:
        rel = row[0].strip()
        label = row[1].strip() if len(row) > 1 and row[1].strip() else None
        path = (list_path.parent / rel).absolute()
        if label is None and labels_from_dirs and path.parent != list_path.parent.absolute():
            label = path.parent.name
        inputs.append(Input(path, Path(rel).as_posix(), label))
    return inputs


def resolve_src(src: Path, out: Path, *, labels_from_dirs: bool) -> list[Input]:
    """The inputs of SRC (a folder, or a list file); :class:`PreprocessError` if there are none."""
    if not src.exists():
        raise PreprocessError(f"SRC {src} does not exist")
    if src.is_dir():
        inputs = list_folder(src, labels_from_dirs=labels_from_dirs, exclude=out.resolve())
        if not inputs:
            raise PreprocessError(f"SRC folder {src} holds no input files")
    elif src.is_file():
        if src.suffix.lower() not in LIST_SUFFIXES:
            raise PreprocessError(f"SRC {src} must be a folder or a .csv/.tsv list of `path,label` rows")
        try:
            inputs = list_file(src, labels_from_dirs=labels_from_dirs)
        except (UnicodeDecodeError, csv.Error) as err:
            raise PreprocessError(f"SRC list {src} is not a readable CSV/TSV file: {err}") from None
        if not inputs:
            raise PreprocessError(f"SRC list {src} has no rows")
    else:
        raise PreprocessError(f"SRC {src} is neither a folder nor a list file")
    return inputs


def extend_label_map(inputs: list[Input], existing: dict[str, int], forced: dict[str, int] | None) -> dict[str, int]:
    """The label map after this split: ``existing`` (from OUT) merged with ``forced``, extended with
    this split's new names in sorted order (unless forced: then it is exactly existing + forced)."""
    merged = dict(existing)
    if forced is not None:
        for name, value in forced.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise PreprocessError(f"label map: value for {name!r} must be an int, got {value!r}")
            if merged.get(name, value) != value:
                raise PreprocessError(f"label map: {name!r} -> {value} conflicts with OUT's label map ({name!r} -> {merged[name]})")
            merged[name] = value
        if len(set(merged.values())) != len(merged):
            raise PreprocessError("label map: two names map to the same integer (given map merged with OUT's)")
        return merged
    for name in sorted({i.label_name for i in inputs if i.label_name is not None} - merged.keys()):
        merged[name] = max(merged.values(), default=-1) + 1
    return merged


def screen(inputs: list[Input], labels: dict[str, int], *, require_label: bool) -> tuple[dict[str, Input], list[tuple[str, Rejection]]]:
    """Inputs to transcode (by key) and those rejected before any decoding (duplicates, labels)."""
    unique: dict[str, Input] = {}
    rejects: list[tuple[str, Rejection]] = []
    seen: set[str] = set()
    for item in inputs:
        if item.rel in seen:
            rejects.append((item.rel, Rejection("duplicate entry in the input list", "input")))
        elif require_label and item.label_name is None:
            rejects.append((item.rel, Rejection("unlabelled: not inside a class folder (--labels-from-dirs)", "input")))
        elif item.label_name is not None and item.label_name not in labels:
            rejects.append((item.rel, Rejection(f"label {item.label_name!r} is not in the given label map", "input")))
        else:
            unique[item.key] = item
        seen.add(item.rel)
    return unique, rejects


def fingerprint(inputs: list[Input]) -> str:
    """SHA-1 over the sorted (path, size, label) of every input: a rerun over a changed set is refused."""
    lines = []
    for item in sorted(inputs, key=lambda i: i.rel):
        size = item.path.stat().st_size if item.path.is_file() else -1
        lines.append(f"{item.rel}\t{size}\t{item.label_name}")
    return hashlib.sha1("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()
