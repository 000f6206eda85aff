"""The GPU check (``device/check.py``) on a CPU machine: its row machinery (a line and a JSON record as each row
ends, budgets per row and for the run, skip reasons, the environment row that ends the run), the pixel-agreement
criterion on real decodes, and every CUDA row's code run on the CPU at toy sizes (``--stand-in``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from device import check
from device.check import PSNR_FLOOR, Context, Report, Result, Row, Skip, agreement, cpu_frames, dali_frames, flat_mask, psnr, run_rows
from pipeline import list_shards
from pipeline.io.shard_reader import scan_shards
from pipeline.reference.decode import rgb_view


def _ctx(tmp_path: Path, **changes) -> Context:
    return Context(bundle=tmp_path / ".device", out=tmp_path / "out", work=tmp_path, profile=check.STAND_IN, stand_in=False, **changes)


def _json(report: Report) -> dict:
    return json.loads(report.path.read_text())


# ---------------------------------------------------------------- rows, budgets, the report
def test_each_row_is_printed_and_written_when_it_ends(tmp_path, capsys):
    report = Report(tmp_path / "out" / "gpu_check.json")
    seen = []

    def first(ctx):
        return Result(True, "fine", {"x": np.float32(1.5), "n": np.int64(3), "bad": float("nan")})

    def second(ctx):
        seen.append(_json(report))  # while row 2 runs, row 1 is on disk already
        raise ValueError("broken input\nsecond line")

    def third(ctx):
        raise Skip("not here")

    run_rows([Row("one", 5, first), Row("two", 5, second), Row("three", 5, third), Row("four", 5, first, cuda=True),
              Row("five", 5, first, dali=True)], _ctx(tmp_path, dali_missing="parts missing: part-01"), report, total=60)
    assert [r["name"] for r in seen[0]["rows"]] == ["one"]
    rows = {r["name"]: r for r in _json(report)["rows"]}
    assert rows["one"]["status"] == "ok" and rows["one"]["metrics"] == {"x": 1.5, "n": 3, "bad": None}
    assert rows["two"]["status"] == "failed" and rows["two"]["reason"] == "ValueError: broken input"
    assert rows["three"] == {**rows["three"], "status": "skipped", "reason": "not here"}
    assert rows["four"]["status"] == "skipped" and rows["four"]["reason"] == "no CUDA"
    assert rows["five"]["status"] == "skipped" and rows["five"]["reason"] == "DALI not installed: parts missing: part-01"
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", "one"], ["failed", "two"], ["skipped", "three"], ["skipped", "four"], ["skipped", "five"]]
    assert report.failed


def test_a_row_over_its_budget_is_stopped_and_the_run_goes_on(tmp_path):
    report = Report(tmp_path / "gpu_check.json")
    cleaned = []

    def slow(ctx):
        try:
            time.sleep(30)
        finally:
            cleaned.append(True)  # finally blocks run: loaders and threads get closed
        return Result(True, "never")

    started = time.monotonic()
    run_rows([Row("slow", 0.5, slow), Row("next", 5, lambda ctx: Result(True, "ran"))], _ctx(tmp_path), report, total=60)
    rows = _json(report)["rows"]
    assert time.monotonic() - started < 10 and cleaned == [True]
    assert rows[0]["status"] == "failed" and rows[0]["reason"].startswith("over its budget")
    assert rows[1]["status"] == "ok"


def test_rows_that_cannot_start_within_the_run_budget_are_skipped(tmp_path):
    report = Report(tmp_path / "gpu_check.json")
    run_rows([Row("a", 1.5, lambda ctx: (time.sleep(1.2), Result(True, "a"))[1]), Row("b", 1.5, lambda ctx: Result(True, "b"))],
             _ctx(tmp_path), report, total=2)
    rows = _json(report)["rows"]
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "skipped" and rows[1]["reason"].startswith("run budget spent")


def test_an_unusable_gpu_is_one_line_and_the_run_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "_nvidia_smi", lambda: {"gpu": "NVIDIA H100 80GB HBM3", "driver": "535.104", "gpu_memory": "81559 MiB"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def init():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12020).\nPlease update it.")

    monkeypatch.setattr(torch.cuda, "init", init)
    report = Report(tmp_path / "gpu_check.json")
    run_rows([Row("env", 5, check.row_env), Row("next", 5, lambda ctx: Result(True, "x"))], _ctx(tmp_path), report, total=60)
    rows = _json(report)["rows"]
    assert rows[0]["status"] == "failed" and "\n" not in rows[0]["summary"]
    assert "driver 535.104" in rows[0]["summary"] and "too old (found version 12020)" in rows[0]["summary"]
    assert rows[1]["status"] == "skipped" and "environment" in rows[1]["reason"]
    assert report.failed


def test_without_a_gpu_the_env_row_is_ok_and_cuda_rows_skip(tmp_path, monkeypatch):
    monkeypatch.setattr(check, "_nvidia_smi", lambda: None)
    monkeypatch.setattr(check, "_device_nodes", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = Report(tmp_path / "gpu_check.json")
    run_rows([Row("env", 5, check.row_env), Row("gpu", 5, lambda ctx: Result(True, "x"), cuda=True)], _ctx(tmp_path), report, total=60)
    rows = _json(report)["rows"]
    assert rows[0]["status"] == "ok" and rows[0]["summary"].startswith("no GPU")
    assert rows[1] == {**rows[1], "status": "skipped", "reason": "no CUDA"}
    assert _json(report)["env"]["torch"] == torch.__version__ and not report.failed


def test_row_names_are_unique_and_every_set_has_an_expected_route():
    names = [r.name for r in check.ROWS]
    assert len(names) == len(set(names)) and names[0] == "env"
    assert set(check.EXPECTED_ROUTES) == set(check.SETS)
    assert {f"model_{a}_{n}" for a in check.ARCHS for n in ("bn", "tgn")} <= set(names)
    assert all(not r.cuda for r in check.ROWS[:6]) and all(r.cuda for r in check.ROWS[6:])


# ---------------------------------------------------------------- pixel agreement: the criterion on real decodes
@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    from preprocess import build_shards
    from synthetic.videos import write_lavfi_video

    root = tmp_path_factory.mktemp("colour")
    write_lavfi_video(root / "src" / "c0.mp4", source="testsrc2", num_frames=32, width=176, height=128, extra_output_args={"crf": 12})
    build_shards(root / "src", root / "out", codec="vp9", min_frames=16, workers=1, progress=False)
    return scan_shards(list_shards(root / "out"))[0][0]


def test_flat_mask_keeps_flat_areas_and_drops_edges():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, 10:] = 200
    mask = flat_mask(image)
    assert mask[:, :7].all() and mask[:, 13:].all() and not mask[:, 8:12].any()
    assert psnr(image, image) == float("inf")


def test_agreement_passes_a_correct_decode_and_fails_a_wrong_matrix_or_range(colour, tmp_path):
    """DALI's CPU decoder against PyAV (the reference backend's converter): above the floor on flat colour. The same
    frames converted with BT.709 instead of BT.601, or as full range, fall far below it: what the check must catch."""
    ctx = _ctx(tmp_path)
    wanted = [0, 9, 31]
    got = dali_frames(ctx, colour, wanted)
    want = cpu_frames(colour.read_video(), wanted)
    for i, f in enumerate(wanted):
        a = agreement(got[i], want[f])
        assert a["flat_psnr_db"] >= PSNR_FLOOR + 5 and a["flat_max_abs"] <= 6 and a["flat_fraction"] > 0.3, a
    with av.open(io.BytesIO(colour.read_video())) as container:
        frame = next(container.decode(video=0))
        reference = rgb_view(frame).copy()
        wrong_matrix = frame.reformat(format="rgb24", src_colorspace="ITU709").to_ndarray()
        wrong_range = frame.reformat(format="rgb24", src_color_range="JPEG").to_ndarray()
    assert agreement(wrong_matrix, reference)["flat_psnr_db"] < PSNR_FLOOR - 5
    assert agreement(wrong_range, reference)["flat_psnr_db"] < PSNR_FLOOR - 5


# ---------------------------------------------------------------- every row's code, on the CPU
@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from device.bundle import build_sets

    root = tmp_path_factory.mktemp("bundle")
    build_sets(root / ".device" / "shards", root / "videos", workers=2, motion_videos=6, motion_frames=64)
    return root / ".device"


@pytest.mark.slow
def test_stand_in_runs_the_cuda_rows_code_on_the_cpu(small_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    status = check.main(["--bundle", str(small_bundle), "--stand-in"])
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["name"] for r in result["rows"]] == [r.name for r in check.ROWS]
    not_run = {r.name for r in check.ROWS if not r.stand_in} | {"bundle"}  # no installed bundle here
    failed = {n: r["reason"] for n, r in rows.items() if r["status"] == "failed"}
    assert not failed, failed
    assert {n for n, r in rows.items() if r["status"] == "skipped"} == not_run
    assert status == 0
    assert rows["identity_vp9"]["metrics"]["wrong"] == 0 and rows["identity_vp9"]["metrics"]["checked"] > 0
    assert rows["kill_resume"]["metrics"]["steps"] == list(range(1, check.KILL_RESUME_STEPS + 1))
    assert 8 <= rows["kill_resume"]["metrics"]["killed_at"] < check.KILL_RESUME_STEPS
    assert rows["loader_dali_gpu"]["metrics"]["backend"] == "dali-cpu" and rows["loader_reference"]["metrics"]["clips_per_s"] > 0
    pixels = rows["pixel_agreement"]["metrics"]  # identical frames: infinite PSNR, written as null in JSON
    assert (pixels["worst_flat_psnr_db"] is None and pixels["worst_flat_max_abs"] == 0) or pixels["worst_flat_psnr_db"] >= PSNR_FLOOR
