"""The DALI index file beside each tar: the format of DALI's ``wds2idx``, which
``fn.readers.webdataset(index_paths=...)`` reads and the reference backend uses for random access.

Format (text): a first line ``v1.2 <number of samples>``, then one line per sample listing each of its
members as ``<ext> <data offset in bytes> <size in bytes> <member name>``, the groups separated by single
spaces. The offset is that of the member's data (after its 512-byte tar header). Only ``v1.2`` is
written and read: it is the version whose lines carry member names, which both readers need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

INDEX_VERSION = "v1.2"


class IndexMember(NamedTuple):
    """One member of a sample as the index lists it."""

    ext: str
    offset: int
    """Byte offset of the member's data in the tar."""
    size: int
    """Bytes of data."""
    name: str
    """Member name in the tar, ``KEY.<ext>``."""


def index_path(tar_path: str | Path) -> Path:
    """Where the index of ``tar_path`` lies: beside it, ``.idx`` for ``.tar``."""
    return Path(tar_path).with_suffix(".idx")


def format_index(samples: Sequence[Sequence[IndexMember]]) -> str:
    """The index text for ``samples`` (each a sequence of members, in tar order)."""
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{m.ext} {m.offset} {m.size} {m.name}" for m in members) for members in samples]
    return "\n".join(lines) + "\n"


def parse_index(text: str, source: str) -> list[list[IndexMember]]:
    """Parse index text; ``source`` (a path or URL) names it in errors. Raises ``ValueError`` for a
    wrong version, a sample count that disagrees with the lines, or a malformed member group."""
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != INDEX_VERSION or not header[1].isdigit():
        raise ValueError(f"{source}: not a DALI index: the first line must be '{INDEX_VERSION} <samples>', got {lines[0] if lines else ''!r}")
    count, body = int(header[1]), lines[1:]
    if count != len(body):
        raise ValueError(f"{source}: the header declares {count} samples but {len(body)} lines follow")
    samples = []
    for number, line in enumerate(body, start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise ValueError(f"{source} line {number}: expected groups of 'ext offset size name', got {line!r}")
        try:
            samples.append([IndexMember(fields[i], int(fields[i + 1]), int(fields[i + 2]), fields[i + 3]) for i in range(0, len(fields), 4)])
        except ValueError:
            raise ValueError(f"{source} line {number}: offset and size must be integers, got {line!r}") from None
    return samples


def read_index(path: Path) -> list[list[IndexMember]]:
    """Parse the index file at ``path`` (see :func:`parse_index`)."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a DALI index (not text: {err})") from None
    return parse_index(text, str(path))
