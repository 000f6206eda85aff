"""One sample of a shard: its member names and the schema of its ``KEY.json`` (docs/design.md §1).

``preprocess`` writes samples with :func:`member_name` and :func:`encode_sample_json`; ``pipeline`` finds
them with :func:`split_member_name` and checks every json with :func:`sample_json_problem`. So the writer
and the reader cannot disagree on a field, an extension or where a key ends.
"""

from __future__ import annotations

import json

#: Extension of a sample's video member -> the container format it holds (libavformat's name), in the
#: order a reader looks for them. ``preprocess`` writes mp4 (VP9, H.264) and avi (MJPEG).
VIDEO_FORMATS: dict[str, str] = {"mp4": "mp4", "webm": "webm", "avi": "avi", "mkv": "matroska"}
VIDEO_EXTS: tuple[str, ...] = tuple(VIDEO_FORMATS)

#: Every field ``preprocess`` writes into ``KEY.json``, with its meaning.
SAMPLE_FIELDS: dict[str, str] = {
    "frames": "exact count of decodable frames (counted by decoding), int > 0",
    "fps": "constant frame rate, float",
    "fps_rational": "the same rate as 'num/den'",
    "width": "pixels, int > 0",
    "height": "pixels, int > 0",
    "codec": "libavcodec's codec name (vp9, h264, mjpeg)",
    "gop": "keyframe interval in frames (1 for all-intra codecs)",
    "source": "the source video's path relative to the input folder",
    "label": "int >= 0, or null when unlabelled",
    "label_name": "class name, or null",
    "video_id": "the source video's key: segments of one video share it",
    "segment_start": "first source frame of this segment",
    "segment_index": "0-based index of this segment in its video",
    "num_segments": "segments the video was cut into (1 when not cut)",
}
#: Fields a reader needs: positive ints.
REQUIRED_POSITIVE_INTS = ("frames", "width", "height")


def member_name(key: str, ext: str) -> str:
    """The tar member name of a sample's member: ``KEY.ext``."""
    return f"{key}.{ext}"


def split_member_name(name: str) -> tuple[str, str] | None:
    """``(key, ext)`` of a tar member name by WebDataset's rule (the key ends at the first dot of the last
    path component), or None for a name without an extension."""
    dot = name.find(".", name.rfind("/") + 1)
    if dot < 0:
        return None
    return name[:dot], name[dot + 1 :]


def encode_sample_json(info: dict) -> bytes:
    """The bytes of ``KEY.json``: exactly the :data:`SAMPLE_FIELDS`, sorted keys, UTF-8, one line."""
    if set(info) != set(SAMPLE_FIELDS):
        raise ValueError(f"sample json fields differ from the schema: missing {sorted(set(SAMPLE_FIELDS) - set(info))}, "
                         f"unknown {sorted(set(info) - set(SAMPLE_FIELDS))}")
    problem = sample_json_problem(info)
    if problem:
        raise ValueError(problem)
    return (json.dumps(info, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sample_json_problem(meta) -> str | None:
    """Why a parsed ``KEY.json`` cannot be used by a reader, or None. Only what a reader relies on is
    required (shards from other writers may omit the rest)."""
    if not isinstance(meta, dict):
        return f"json is a {type(meta).__name__}, not an object"
    for name in REQUIRED_POSITIVE_INTS:
        value = meta.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return f"json field {name!r} must be a positive int, got {value!r}"
    label = meta.get("label")
    if label is not None and (not isinstance(label, int) or isinstance(label, bool) or label < 0):
        return f"json field 'label' must be a non-negative int or null, got {label!r}"
    return None
