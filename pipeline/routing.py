"""Which decode path a loader runs, from the backend asked for, the shards' codecs and the machine.

DALI 2.4's ``mixed`` (NVDEC) video decoder takes H.264, HEVC, MPEG-4, VP8, VP9 and AV1, but not MJPEG: its
stream selection refuses MJPEG ("not supported by the GPU variant") although the operator's docstring
lists it. Its CPU decoder takes VP8, VP9 and MJPEG, not H.264. A shard set the GPU decoder cannot take
entirely is therefore routed to a host path (the reference backend, or DALI's CPU decoder when DALI was
asked for by name and can decode every codec there), and the loader says which path ran and why
(``VideoLoader.backend`` / ``route_reason``, also logged).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Backends a caller may ask for: ``auto`` picks one from the machine and the codecs (:func:`choose_backend`).
BACKENDS = ("auto", "dali", "reference")

#: codec names as libavcodec (and so the samples' json ``codec``) spells them
MIXED_CODECS = frozenset({"h264", "hevc", "mpeg4", "vp8", "vp9", "av1"})
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})

#: What ``backend="auto"`` runs without a GPU, chosen by ``python -m bench loader`` (BENCHMARKS.md): DALI's
#: CPU decoder cannot seek, so the reference backend's one-pass PyAV decode of the union of a sample's clips
#: (jumping to a keyframe when that saves work) is as fast in pretrain mode and faster for single clips and long videos.
CPU_DEFAULT = "reference"

#: Videos the ``mixed`` decoder decodes at once per process (its thread pool). NVDEC runs many sessions in
#: parallel; the CPU side of each (demuxing, feeding, mapping frames) is light, so this is sized for the
#: decoder rather than for the host's cores.
GPU_DECODE_THREADS = 12


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


def choose_backend(requested: str, codecs: set[str], *, cuda: bool) -> Route:
    """The path for ``requested`` (``auto``, ``dali`` or ``reference``) over samples of ``codecs``.

    ``auto``: DALI ``mixed`` on a GPU when it takes every codec, else :data:`CPU_DEFAULT`.
    ``dali``: ``mixed`` on a GPU when it takes every codec; otherwise DALI's CPU decoder (on a GPU machine
    only when that takes every codec, else the reference backend). Without a GPU, ``dali`` is DALI's CPU
    decoder whatever the codecs: a sample it cannot decode is a named per-sample error, as for bad bytes.
    """
    check_backend(requested)
    if requested == "reference":
        return Route("reference", "")
    if not cuda:
        return Route("dali-cpu", "") if requested == "dali" else Route(CPU_DEFAULT, "no GPU")
    refused = sorted(codecs - MIXED_CODECS, key=str)
    if not refused:
        return Route("dali-gpu", "")
    why = f"DALI's GPU (mixed) video decoder cannot decode {', '.join(map(str, refused))}"
    if requested == "dali" and codecs <= DALI_CPU_CODECS:
        return Route("dali-cpu", why + ": DALI's CPU decoder instead")
    return Route("reference", why + ": the reference (PyAV) backend instead")


def dali_threads(backend: str, *, num_workers: int, gpu_decode_threads: int = GPU_DECODE_THREADS) -> int:
    """DALI's thread count: the ``mixed`` decoder's own pool size on a GPU, ``num_workers`` CPU threads otherwise."""
    if gpu_decode_threads < 1:
        raise ValueError(f"gpu_decode_threads must be >= 1, got {gpu_decode_threads}")
    return gpu_decode_threads if backend == "dali-gpu" else max(1, num_workers)
