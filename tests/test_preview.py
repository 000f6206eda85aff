"""``python -m pipeline preview`` (``pipeline/cli.py``, ``pipeline/preview.py``) end to end."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import frame_numbers


@pytest.mark.slow
def test_preview_cli_end_to_end(shards, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    out = tmp_path / "preview"
    cmd = [sys.executable, "-m", "pipeline", "preview", *shards, "--backend", "dali", "--mode", "pretrain", "--num-samples", "3",
           "--seed", "7", "--no-augment", "--num-frames", "8", "--num-clips", "3", "--crop-size", "64", "--resize", "64", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    data = np.load(out / "clips.npz")
    assert data["clips"].shape == (3, 3, 8, 64, 64, 3) and data["clips"].dtype == np.uint8
    assert data["frame_indices"].shape == (3, 3, 8) and data["speeds"].shape == (3, 3) and data["keys"].shape == (3,)
    assert data["labels"].shape == (3,) and set(data["labels"].tolist()) <= {0, 1}
    np.testing.assert_array_equal(frame_numbers(data["clips"]), data["frame_indices"])
    assert np.all(np.diff(data["frame_indices"], axis=-1) == data["speeds"][..., None])
    image = Image.open(out / "preview.png")
    assert image.size[1] >= 9 * 64 and image.size[0] >= 8 * 64  # one row per clip, one column per frame
