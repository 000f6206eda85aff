"""``python -m pipeline preview``: dump a few samples as arrays plus a contact sheet to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.config import LoaderConfig
from pipeline.loader import build_loader

LABEL_WIDTH = 190  # pixels of text left of each row


def collect(shards: list[str], cfg: LoaderConfig, *, backend: str, num_samples: int, num_workers: int = 1, remote=None) -> dict:
    """The first ``num_samples`` samples of epoch 0 as uint8 clips (before normalization) and their labels."""
    loader = build_loader(shards, cfg, backend=backend, num_workers=num_workers, normalized=False, remote=remote)
    parts: dict[str, list] = {"clips": [], "frame_indices": [], "speeds": [], "speed_label": [], "order_label": [], "labels": [], "keys": []}
    taken = 0
    for batch in loader:
        n = min(len(batch["key"]), num_samples - taken)
        parts["clips"].append(batch["clips"][:n].cpu().numpy())
        parts["frame_indices"].append(batch["frame_indices"][:n].numpy())
        parts["speeds"].append(batch["speeds"][:n].numpy())
        parts["speed_label"].append(batch["speed_label"][:n].numpy())
        parts["order_label"].append(batch["order_label"][:n].numpy())
        parts["labels"].append(batch["label"][:n].numpy())
        parts["keys"].extend(batch["key"][:n])
        taken += n
        if taken == num_samples:
            break
    if not taken:
        raise RuntimeError(f"no samples to preview (stats: {loader.stats})")
    out = {k: np.concatenate(v) for k, v in parts.items() if k != "keys"}
    out["keys"] = np.array(parts["keys"])
    out["backend"] = np.array(loader.backend)
    return out


def contact_sheet(data: dict, path: Path, *, max_frames: int = 16) -> Path:
    """One row per clip: its frames left to right, annotated with key, clip number, speed and frame range."""
    clips = data["clips"]  # (N, K, T, H, W, 3)
    n, k, t, h, w, _ = clips.shape
    shown = min(t, max_frames)
    sheet = Image.new("RGB", (LABEL_WIDTH + shown * (w + 2), n * k * (h + 2) + 4 * n), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for i in range(n):
        for j in range(k):
            frames = data["frame_indices"][i, j]
            text = f"{data['keys'][i][:16]}\nclip {j}  speed {int(data['speeds'][i, j]):+d}\nframes {frames[0]} to {frames[-1]}\nlabel {int(data['labels'][i])}"
            draw.multiline_text((4, y + 2), text, fill="black")
            for f in range(shown):
                sheet.paste(Image.fromarray(clips[i, j, f]), (LABEL_WIDTH + f * (w + 2), y))
            y += h + 2
        y += 4
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def preview(shards: list[str], cfg: LoaderConfig, *, backend: str, num_samples: int, out: Path, remote=None) -> dict:
    """Write ``out/clips.npz`` (clips uint8 (N, K, T, H, W, 3), frame_indices (N, K, T), speeds (N, K), keys, labels,
    speed_label, order_label) and ``out/preview.png``; return the arrays."""
    data = collect(shards, cfg, backend=backend, num_samples=num_samples, remote=remote)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "clips.npz", **data)
    contact_sheet(data, out / "preview.png")
    return data
