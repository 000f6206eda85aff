"""A short loader soak (``tests/soak_loader.py``, 200 batches over epoch boundaries): memory stays flat.

The full run (2,000 batches) is ``python tests/soak_loader.py``; its numbers are in BENCHMARKS.md
"Loader soak (memory)"."""

from __future__ import annotations

import json

import pytest
from reliability_helpers import run

#: Allowed growth after warm-up. A leak of one batch's clips per batch (4x3x3x4x32x32 float32 = 0.56 MiB)
#: would add ~50 MiB between the first and last third of the window; decoded-frame leaks are larger still.
#: Sampled memory wobbles by up to ~20 MiB (malloc arenas; workers re-forked every epoch), so the medians
#: of the window's first and last thirds are compared, not two single samples.
MAX_GROWTH_MIB = 32


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def _soak(tmp_path, *args: str) -> tuple[dict, str]:
    report = tmp_path / "soak.json"
    returncode, log = run(["tests/soak_loader.py", "--every", "10", "--warmup", "30", *args, "--json", str(report)], timeout=240)
    assert returncode == 0, log
    return json.loads(report.read_text()), log


def _growth(result: dict, key: str) -> float:
    """Median of the last third of the samples after warm-up minus the median of the first third, in MiB."""
    window = [s[key] for s in result["samples"] if s["batch"] >= result["warmup_batches"]]
    third = max(1, len(window) // 3)
    return _median(window[-third:]) - _median(window[:third])


@pytest.mark.slow
@pytest.mark.parametrize("backend, batches, copies", [("reference", 200, 25), ("dali", 120, 10)])
def test_loader_memory_is_flat(tmp_path, backend, batches, copies):
    result, log = _soak(tmp_path, "--batches", str(batches), "--copies", str(copies), "--backend", backend)
    assert result["batches"] == batches and result["skipped"] == 0
    assert result["epochs"] >= 3  # epoch roll-overs (new workers / pipelines) are inside the window
    assert result["clips_shape"] == [4, 3, 3, 4, 32, 32]
    for key in ("rss_mib", "tree_pss_mib"):
        assert _growth(result, key) < MAX_GROWTH_MIB, f"{key} grew by {_growth(result, key):.1f} MiB\n{log}"
    assert result["rss_max_mib"] - result["rss_start_mib"] < 2 * MAX_GROWTH_MIB, log


@pytest.mark.slow
def test_the_soak_detects_a_leak(tmp_path):
    """The control: a loop that keeps every batch (8 x 3 clips x 4 x 32 x 32 float32 = 1.1 MiB) fails the bound."""
    result, log = _soak(tmp_path, "--batches", "120", "--copies", "10", "--batch-size", "8", "--hold")
    assert _growth(result, "rss_mib") > MAX_GROWTH_MIB, log
