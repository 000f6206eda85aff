"""Which decode path a loader runs, from the backend asked for, the shards' codecs and frame sizes, and the machine.

DALI 2.4's ``mixed`` (NVDEC) video decoder takes H.264, HEVC, MPEG-4, VP8, VP9 and AV1, but not MJPEG: its
stream selection refuses MJPEG ("not supported by the GPU variant") although the operator's docstring
lists it. NVDEC also has a smallest frame per codec (:data:`NVDEC_MIN_SIZE`); DALI refuses a smaller video
with "Video is too small in at least one dimension", which would fail every batch. Its CPU decoder takes
VP8, VP9 and MJPEG, not H.264. A shard set the GPU decoder cannot take entirely is therefore routed to a
host path (the reference backend, or DALI's CPU decoder when DALI was asked for by name and can decode
every codec there), and the loader says which path ran and why (``VideoLoader.backend`` / ``route_reason``,
also logged).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Backends a caller may ask for: ``auto`` picks one from the machine and the codecs (:func:`choose_backend`).
BACKENDS = ("auto", "dali", "reference")

#: codec names as libavcodec (and so the samples' json ``codec``) spells them
MIXED_CODECS = frozenset({"h264", "hevc", "mpeg4", "vp8", "vp9", "av1"})
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})

#: NVDEC's smallest frame, (width, height) in pixels, per codec (NVIDIA Video Codec SDK, NVDEC application
#: note: H.264, MPEG-4 and VP8 48x16, HEVC 144x144, VP9 and AV1 128x128). DALI compares the *coded* size, which
#: is the display size rounded up to the codec's block, so a display size at or above these always passes.
#: The GPU reports its own values (``dali/nvdec.py``, the GPU check prints them next to these).
NVDEC_MIN_SIZE = {"h264": (48, 16), "mpeg4": (48, 16), "vp8": (48, 16), "hevc": (144, 144), "vp9": (128, 128), "av1": (128, 128)}

#: What ``backend="auto"`` runs without a GPU, chosen by ``python -m bench loader`` (BENCHMARKS.md): DALI's
#: CPU decoder cannot seek, so the reference backend's one-pass PyAV decode of the union of a sample's clips
#: (jumping to a keyframe when that saves work) is as fast in pretrain mode and faster for single clips and long videos.
CPU_DEFAULT = "reference"

#: ``gpu_decode_threads`` default: 0 = derived from what the GPU reports (:func:`gpu_decode_threads_for`).
GPU_DECODE_THREADS = 0
#: ``mixed`` decoder threads per NVDEC engine in the derived default. Each thread decodes one video at a time
#: and waits for the GPU after every frame (DALI 2.4 synchronizes its stream per frame), so one engine is kept
#: busy by more than one thread; 2 is the starting point that the GPU check measures against 1 and 3 per engine
#: (``device/check.py`` row ``decode_threads``, BENCHMARKS.md "GPU path").
THREADS_PER_NVDEC = 2


@dataclass(frozen=True)
class Route:
    """The decode path a loader runs."""

    backend: str
    """``"dali-gpu"`` (DALI ``mixed``), ``"dali-cpu"`` (DALI's CPU decoder) or ``"reference"`` (PyAV workers)."""
    reason: str
    """Why this path, in words (logged; empty when it is simply what was asked for)."""


def check_backend(requested: str) -> None:
    """Raise ValueError unless ``requested`` is one of :data:`BACKENDS`."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")


def too_small_for_nvdec(smallest: dict[str, tuple[int, int]]) -> list[str]:
    """For each codec whose smallest video (``smallest``: codec -> (least width, least height) over the
    samples) is below :data:`NVDEC_MIN_SIZE`, a phrase saying so; empty when NVDEC takes every size."""
    found = []
    for codec, (width, height) in sorted(smallest.items(), key=lambda item: str(item[0])):
        min_width, min_height = NVDEC_MIN_SIZE.get(codec, (0, 0))
        if width < min_width or height < min_height:
            found.append(f"{codec} smaller than {min_width}x{min_height} (smallest here {width}x{height})")
    return found


def choose_backend(requested: str, codecs: set[str], *, cuda: bool, smallest: dict[str, tuple[int, int]] | None = None) -> Route:
    """The path for ``requested`` (``auto``, ``dali`` or ``reference``) over samples of ``codecs``.

    ``smallest``: codec -> (least width, least height) of the samples, in pixels (None: sizes not checked).
    ``auto``: DALI ``mixed`` on a GPU when it takes every codec at every size, else :data:`CPU_DEFAULT`.
    ``dali``: ``mixed`` on a GPU when it takes every codec at every size; otherwise DALI's CPU decoder (on a
    GPU machine only when that takes every codec, else the reference backend). Without a GPU, ``dali`` is
    DALI's CPU decoder whatever the codecs: a sample it cannot decode is a named per-sample error, as for bad bytes.
    """
    check_backend(requested)
    if requested == "reference":
        return Route("reference", "")
    if not cuda:
        return Route("dali-cpu", "") if requested == "dali" else Route(CPU_DEFAULT, "no GPU")
    reasons = []
    refused = sorted(codecs - MIXED_CODECS, key=str)
    if refused:
        reasons.append(f"DALI's GPU (mixed) video decoder cannot decode {', '.join(map(str, refused))}")
    small = too_small_for_nvdec({c: s for c, s in (smallest or {}).items() if c in MIXED_CODECS})
    if small:
        reasons.append(f"NVDEC cannot decode {'; '.join(small)}")
    if not reasons:
        return Route("dali-gpu", "")
    why = "; ".join(reasons)
    if requested == "dali" and codecs <= DALI_CPU_CODECS:
        return Route("dali-cpu", why + ": DALI's CPU decoder instead")
    return Route("reference", why + ": the reference (PyAV) backend instead")


def gpu_decode_threads_for(nvdec_engines: int, cpus: int) -> int:
    """The derived ``mixed`` decoder thread count: :data:`THREADS_PER_NVDEC` per NVDEC engine the GPU reports,
    at most one per CPU this process may run on, at least 1."""
    return max(1, min(THREADS_PER_NVDEC * nvdec_engines, cpus))


def dali_threads(backend: str, *, num_workers: int, gpu_decode_threads: int = GPU_DECODE_THREADS,
                 nvdec_engines: int | None = None, cpus: int = 1) -> int:
    """DALI's thread count: the ``mixed`` decoder's own pool size on a GPU (``gpu_decode_threads``, or when that
    is 0 :func:`gpu_decode_threads_for` the GPU's ``nvdec_engines`` and ``cpus``), ``num_workers`` CPU threads otherwise."""
    if gpu_decode_threads < 0:
        raise ValueError(f"gpu_decode_threads must be >= 0 (0: derived from the GPU), got {gpu_decode_threads}")
    if backend != "dali-gpu":
        return max(1, num_workers)
    if gpu_decode_threads:
        return gpu_decode_threads
    if nvdec_engines is None:
        raise ValueError("gpu_decode_threads=0 (derived from the GPU) needs the GPU's NVDEC engine count")
    return gpu_decode_threads_for(nvdec_engines, cpus)
