"""``bench/model.py`` (``python -m bench model``)."""

from __future__ import annotations

import pytest


def test_bench_cli_prints_one_row_per_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import model as bench

    bench.main(["--backbones", "c3d,r3d_18", "--batch", "2", "--frames", "8", "--size", "32",
                "--base-width", "2", "--repeats", "1", "--warmup", "0"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| c3d", "| r3d_18"))]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 7 and all(float(cell) > 0 for cell in cells[1:])
