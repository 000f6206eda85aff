"""shardformat, the on-disk contract: index and manifest round trips, one version rule, atomic writes,
and the import direction that keeps it the one home of the format."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from shardformat import (
    INDEX_VERSION,
    IndexMember,
    ManifestError,
    atomic_file,
    atomic_write,
    format_index,
    SAMPLE_FIELDS,
    VIDEO_EXTS,
    encode_sample_json,
    load_manifest,
    member_name,
    sample_json_problem,
    split_member_name,
    parse_index,
    read_index,
    save_manifest,
    split_tars,
)

from pipeline.io.remote_shards import label_names

ROOT = Path(__file__).resolve().parents[1]


def test_index_round_trip(tmp_path):
    samples = [[IndexMember("mp4", 512, 1000, "a.mp4"), IndexMember("json", 2048, 80, "a.json")],
               [IndexMember("webm", 3072, 7, "b.webm"), IndexMember("json", 4096, 9, "b.json"), IndexMember("cls", 5120, 1, "b.cls")]]
    text = format_index(samples)
    assert text.splitlines()[0] == f"{INDEX_VERSION} 2"
    atomic_write(tmp_path / "s.idx", text)
    assert read_index(tmp_path / "s.idx") == samples
    assert parse_index(text, "x") == samples


@pytest.mark.parametrize("text, reason", [
    ("", "first line"),
    ("v1.1 1\nmp4 0 1 a.mp4\n", "first line"),        # one version rule: only the version written
    ("v1.2 2\nmp4 0 1 a.mp4\n", "declares 2 samples"),
    ("v1.2 1\nmp4 0 1\n", "groups"),
    ("v1.2 1\nmp4 zero 1 a.mp4\n", "integers"),
])
def test_a_malformed_index_is_refused_with_its_source_named(text, reason):
    with pytest.raises(ValueError, match=reason) as info:
        parse_index(text, "shards/x.idx")
    assert "shards/x.idx" in str(info.value)


def test_manifest_round_trip_and_label_names(tmp_path):
    assert load_manifest(tmp_path) == {"format": "speedssl-shards/1", "label_map": {}, "splits": {}}
    manifest = load_manifest(tmp_path)
    manifest["label_map"] = {"run": 1, "walk": 0}
    manifest["splits"]["train"] = {"shards": [{"tar": "shards/train-000000.tar", "index": "shards/train-000000.idx"}]}
    save_manifest(tmp_path, manifest)
    assert load_manifest(tmp_path) == manifest
    assert label_names(tmp_path) == ["walk", "run"]
    assert split_tars(tmp_path, "train") == [tmp_path / "shards/train-000000.tar"]
    with pytest.raises(FileNotFoundError, match="no split 'test'"):
        split_tars(tmp_path, "test")
    assert split_tars(tmp_path / "elsewhere", "train") is None


@pytest.mark.parametrize("label_map, reason", [({"a": 0, "b": 2}, "not 0..C-1"), ({"a": 0, "b": 0}, "same integer"),
                                               ({"a": "0"}, "non-negative int")])
def test_label_names_refuse_a_broken_label_map(tmp_path, label_map, reason):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "speedssl-shards/1", "label_map": label_map, "splits": {}}))
    with pytest.raises(ManifestError, match=reason):
        label_names(tmp_path)


def test_a_foreign_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": "other/9"}')
    with pytest.raises(ManifestError, match="manifest.json"):
        load_manifest(tmp_path)


def test_atomic_file_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as f:
            f.write(b"half")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


#: What measures or fakes the library from outside it: no library package imports these.
OUTSIDE = {"bench", "synthetic", "demo", "tests"}


@pytest.mark.parametrize("files, forbidden", [
    (["shardformat/**/*.py"], {"preprocess", "pipeline", "training", "model", "train", *OUTSIDE}),  # the contract imports no user of it
    (["preprocess/**/*.py"], {"pipeline", "training", "model", "train", *OUTSIDE}),
    (["pipeline/**/*.py"], {"preprocess", "model", "training", "train", *OUTSIDE}),  # the data flows one way
    (["model/**/*.py"], {"preprocess", "pipeline", "training", "train", *OUTSIDE}),
    (["training/**/*.py", "train.py"], {"preprocess", *OUTSIDE}),                  # training reads shards, never builds them
])
def test_imports_follow_the_data(files, forbidden):
    for pattern in files:
        paths = sorted(ROOT.glob(pattern))
        assert paths, pattern
        for path in paths:
            bad = _imported_packages(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def _sample_info(**changes) -> dict:
    info = {name: None for name in SAMPLE_FIELDS}
    info.update(frames=48, fps=25.0, fps_rational="25/1", width=170, height=128, codec="vp9", gop=16, source="a/b.mp4",
                label=2, label_name="walk", video_id="k", segment_start=0, segment_index=0, num_segments=1)
    info.update(changes)
    return info


def test_the_sample_json_is_the_schema_in_sorted_order_on_one_line():
    data = encode_sample_json(_sample_info(label_name="läuft"))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    parsed = json.loads(data)
    assert list(parsed) == sorted(SAMPLE_FIELDS) and parsed["label_name"] == "läuft"
    assert "läuft".encode() in data  # UTF-8, not \u escapes
    assert sample_json_problem(parsed) is None


@pytest.mark.parametrize("changes, problem", [({"frames": 0}, "'frames' must be a positive int"),
                                              ({"width": True}, "'width' must be a positive int"),
                                              ({"label": -1}, "'label' must be a non-negative int or null")])
def test_the_writer_and_the_reader_refuse_the_same_bad_json(changes, problem):
    info = _sample_info(**changes)
    assert problem in sample_json_problem(info)
    with pytest.raises(ValueError, match=problem):
        encode_sample_json(info)


def test_the_writer_refuses_a_field_outside_the_schema():
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        encode_sample_json({**_sample_info(), "extra": 1})
    with pytest.raises(ValueError, match="missing \\['gop'\\]"):
        encode_sample_json({k: v for k, v in _sample_info().items() if k != "gop"})
    assert sample_json_problem([1]) == "json is a list, not an object"


@pytest.mark.parametrize("name, parts", [("abc.mp4", ("abc", "mp4")), ("dir/abc.seg.json", ("dir/abc", "seg.json")),
                                         ("d.v2/abc.cls", ("d.v2/abc", "cls")), ("noext", None)])
def test_member_names_split_by_webdatasets_rule(name, parts):
    assert split_member_name(name) == parts
    if parts:
        assert member_name(*parts) == name


def test_every_codec_preprocess_writes_has_a_video_extension_readers_know():
    from preprocess.media import CODECS

    assert {codec.ext for codec in CODECS.values()} <= set(VIDEO_EXTS)
