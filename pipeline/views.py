"""Spatial views of a clip (resize, crop, flip), drawn once per clip and applied to all its frames.

Both backends call :func:`draw_views` with the sample's generator and :func:`assemble_clips` on the decoded
frames (CPU or CUDA tensors alike), so their outputs differ only by what their decoders return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import LoaderConfig


@dataclass(frozen=True)
class View:
    """Where one clip's output pixels come from: resize the frame to ``resize_hw`` (height, width), take the
    ``size`` x ``size`` square at (``top``, ``left``), mirror it horizontally if ``flip``."""

    resize_hw: tuple[int, int]
    top: int
    left: int
    size: int
    flip: bool


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``short_side``, aspect kept (rounded)."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def draw_views(rng: np.random.Generator, num_clips: int, height: int, width: int, cfg: LoaderConfig) -> list[View]:
    """One view per clip for a ``height`` x ``width`` video (see ``LoaderConfig.augment``/``eval_view``)."""
    size = cfg.crop_size
    if not cfg.augment and cfg.eval_view == "full":
        return [View((size, size), 0, 0, size, False)] * num_clips
    rh, rw = resized_shape(height, width, cfg.resize)
    if not cfg.augment:
        return [View((rh, rw), (rh - size) // 2, (rw - size) // 2, size, False)] * num_clips
    views = []
    for _ in range(num_clips):
        top, left = int(rng.integers(0, rh - size + 1)), int(rng.integers(0, rw - size + 1))
        views.append(View((rh, rw), top, left, size, bool(rng.random() < 0.5)))
    return views


def _check_views(views: list[View]) -> None:
    if len({(v.resize_hw, v.size) for v in views}) != 1:
        raise ValueError("all clips of a sample share one resize and one crop size")


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames resized to (N, ``height``, ``width``, 3): bilinear with antialiasing, rounded."""
    x = frames.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def assemble_clips(frames: torch.Tensor, positions: np.ndarray, views: list[View]) -> torch.Tensor:
    """Cut the clips out of a video's decoded frames.

    ``frames``: (U, H, W, 3) uint8, the sorted unique frames of all clips (decoded once);
    ``positions``: (K, T) indices into ``frames`` (an array, or a long tensor on ``frames``' device);
    returns (K, T, S, S, 3) uint8 on ``frames``' device.
    """
    _check_views(views)
    rh, rw = views[0].resize_hw
    if tuple(frames.shape[1:3]) != (rh, rw):  # resize the union once, not every clip
        frames = _resize(frames, rh, rw)
    if isinstance(positions, torch.Tensor):
        index = positions.to(device=frames.device, dtype=torch.long)
    else:
        index = torch.as_tensor(np.asarray(positions), dtype=torch.long, device=frames.device)
    clips = []
    for k, v in enumerate(views):
        window = frames[:, v.top : v.top + v.size, v.left : v.left + v.size]  # a view: gather only the crop
        clip = window[index[k]]  # (T, S, S, 3)
        clips.append(clip.flip(2) if v.flip else clip)
    return torch.stack(clips)  # (K, T, S, S, 3)


def assemble_batch(frames: list[torch.Tensor], positions: list[np.ndarray], views: list[list[View]]) -> list[torch.Tensor]:
    """:func:`assemble_clips` for every sample of a batch (same arguments, one list entry per sample), same
    output. On a CUDA device through :func:`gather_clips` (a handful of kernel launches per batch instead of
    about fifteen per sample); elsewhere sample by sample, because on the CPU the sliced copies of
    ``assemble_clips`` run 5x faster than one gather (measured: 4 vs 23 ms for 4 clips of 16 frames at
    112 px from 128x171 frames, one thread)."""
    if frames and frames[0].device.type == "cuda":
        return gather_clips(frames, positions, views)
    return [assemble_clips(f, p, v) for f, p, v in zip(frames, positions, views)]


def gather_clips(frames: list[torch.Tensor], positions: list[np.ndarray], views: list[list[View]]) -> list[torch.Tensor]:
    """:func:`assemble_batch` in few kernels: samples whose frames and views have the same sizes are stacked,
    resized with one call and cut with one indexed gather (crops and flips are index arrays), and every
    index array of the batch is built on the host and uploaded in one copy (pinned and asynchronous on a
    GPU, so the calling thread does not wait for it)."""
    if not frames:
        return []
    device = frames[0].device
    groups: dict[tuple, list[int]] = {}
    for i, (f, v) in enumerate(zip(frames, views)):
        _check_views(v)
        groups.setdefault((tuple(f.shape[1:]), v[0].resize_hw, v[0].size), []).append(i)
    host = []  # per group: (clips, T) frame rows into the group's stack, (clips, S) pixel rows, (clips, S) columns
    for members in groups.values():
        starts = np.cumsum([0] + [len(frames[i]) for i in members])[:-1]
        span = np.arange(views[members[0]][0].size)
        host.append((np.concatenate([start + np.asarray(positions[i]) for i, start in zip(members, starts)]),
                     np.stack([v.top + span for i in members for v in views[i]]),
                     np.stack([v.left + (span[::-1] if v.flip else span) for i in members for v in views[i]])))
    flat = torch.from_numpy(np.concatenate([a.ravel() for arrays in host for a in arrays]).astype(np.int64))
    if device.type == "cuda":
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True).split([a.size for arrays in host for a in arrays])
    out: list[torch.Tensor | None] = [None] * len(frames)
    for g, (members, arrays) in enumerate(zip(groups.values(), host)):
        rows_t, rows, columns = (flat[3 * g + j].view(a.shape) for j, a in enumerate(arrays))
        stack = torch.cat([frames[i] for i in members]) if len(members) > 1 else frames[members[0]]
        rh, rw = views[members[0]][0].resize_hw
        if tuple(stack.shape[1:3]) != (rh, rw):
            stack = _resize(stack, rh, rw)
        clips = stack[rows_t[:, :, None, None], rows[:, None, :, None], columns[:, None, None, :]]  # (clips, T, S, S, 3)
        for i, part in zip(members, clips.split([len(views[i]) for i in members])):
            out[i] = part
    return out


def needs_resize(views: list[View], height: int, width: int) -> bool:
    """Whether frames of ``height`` x ``width`` must be resized for ``views`` (then only
    :func:`assemble_clips` can cut the clips; otherwise :class:`ClipWriter` can)."""
    return views[0].resize_hw != (height, width)


def clip_shape(positions: np.ndarray, size: int) -> tuple[int, int, int, int, int]:
    """(K, T, size, size, 3): the shape of the clips at ``positions`` (K, T) cut at ``size``."""
    k, t = np.shape(positions)
    return k, t, size, size, 3


def clip_buffer(positions: np.ndarray, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The uint8 (K, T, size, size, 3) tensor that clips at ``positions`` (K, T) are written into: ``out``,
    checked, or a new one."""
    shape = clip_shape(positions, size)
    if out is None:
        return torch.empty(shape, dtype=torch.uint8)
    if tuple(out.shape) != shape or out.dtype != torch.uint8:
        raise ValueError(f"out must be uint8 of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    return out


def slots_by_frame(positions: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """Union position -> the (clip, time) slots of ``positions`` (K, T) that show that frame."""
    uses: dict[int, list[tuple[int, int]]] = {}
    for (k, t), u in np.ndenumerate(np.asarray(positions)):
        uses.setdefault(int(u), []).append((k, t))
    return uses


class ClipWriter:
    """:func:`assemble_clips` one decoded frame at a time, for views that need no resize: each frame's crops
    are copied straight into the (K, T, S, S, 3) output, the only copy of the pixels after decoding
    (no stacked frame array, no gathered or flipped intermediates). Same output as ``assemble_clips``.

    ``positions``: (K, T) indices into the sample's sorted unique frames; ``out``: where to write (e.g. a
    tensor in shared memory), a new tensor by default.
    """

    def __init__(self, positions: np.ndarray, views: list[View], *, out: torch.Tensor | None = None):
        _check_views(views)
        self.clips = clip_buffer(positions, views[0].size, out)
        self._out = self.clips.numpy()
        self.frame_hw = views[0].resize_hw
        self._uses = slots_by_frame(positions)
        self._windows = [(slice(v.top, v.top + v.size), slice(v.left, v.left + v.size), v.flip) for v in views]
        self._pending = set(self._uses)

    def put(self, position: int, frame: np.ndarray) -> None:
        """Frame ``position`` of the union, (H, W, 3) uint8 with (H, W) == the views' resize size."""
        if frame.shape != (*self.frame_hw, 3):
            raise ValueError(f"frame of shape {frame.shape}, expected {(*self.frame_hw, 3)}")
        for k, t in self._uses.get(position, ()):
            rows, columns, flip = self._windows[k]
            if flip:  # torch's flip: numpy's copy through a reversed 3-byte-pixel view is 4x slower
                self.clips[k, t].copy_(torch.from_numpy(frame[rows, columns]).flip(1))
            else:
                self._out[k, t] = frame[rows, columns]
        self._pending.discard(position)

    def missing(self) -> list[int]:
        """Union positions that clips use but :meth:`put` has not received."""
        return sorted(self._pending)


def normalize_constants(mean, std, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of :func:`normalize`, each (3, 1, 1, 1) on ``device``: made once per batch (on a GPU
    each is a host-to-device copy)."""
    shape = (3, 1, 1, 1)  # broadcast over (T, H, W) of a contiguous channel-first tensor
    scale = torch.tensor([1 / (255 * s) for s in std], device=device).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(shape)
    return scale, shift


def normalize(clips: torch.Tensor, mean, std, *, out: torch.Tensor | None = None,
              scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 (..., K, T, H, W, 3) -> float32 (..., K, 3, T, H, W), scaled to [0, 1] then standardized.
    ``out``: a float32 tensor of the result's shape to write into (a new one by default). ``scale_shift``:
    the constants (:func:`normalize_constants`), made once per batch by the loader's ``Collator``."""
    x = clips.movedim(-1, -4)  # (..., K, 3, T, H, W), a view
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    elif out.shape != x.shape:  # torch would resize ``out`` (a view into a batch) instead of failing
        raise ValueError(f"out has shape {tuple(out.shape)}, the normalized clips {tuple(x.shape)}")
    scale, shift = scale_shift if scale_shift is not None else normalize_constants(mean, std, x.device)
    if x.device.type != "cpu":
        out.copy_(x.contiguous())  # transpose the 1-byte data first: the cheapest pass to make strided
        return out.mul_(scale).add_(shift)
    # on the CPU, one (T, H, W) channel of one clip at a time, converted, scaled and shifted in a single pass:
    # shift + scale * x with x cast from uint8 on the fly. Three passes over the whole sample cost 2.2 ms per
    # pretext sample, a conversion pass and a scale-and-shift pass per channel 1.49 ms, this one 1.37 ms
    # (one thread, writing into a rotating 4-sample batch as the loader does); all give the same bits
    blocks_in, blocks_out = x.reshape(-1, *x.shape[-4:]), out.view(-1, *out.shape[-4:])
    scales, shifts = scale.view(-1).tolist(), shift.view(-1)
    for block_in, block_out in zip(blocks_in, blocks_out):
        for c in range(block_in.shape[0]):
            torch.add(shifts[c], block_in[c], alpha=scales[c], out=block_out[c])
    return out
