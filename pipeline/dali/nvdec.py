"""What the GPU says about its video decoders (NVDEC): engine count and frame size limits per codec.

The NVIDIA driver's video library (``libnvcuvid.so.1``, the one DALI's ``mixed`` decoder loads) answers
``cuvidGetDecoderCaps`` for a codec, chroma format and bit depth with: supported or not, the number of NVDEC
engines that decode it, and the smallest and largest frame. The call needs a current CUDA context, so this
module retains the device's primary context through the driver API (``libcuda.so.1``), makes it current for
the call and lets it go again: the same context torch and DALI use, and nothing is left current here.

Layout of ``CUVIDDECODECAPS`` and the codec numbers follow the Video Codec SDK's ``cuviddec.h`` (public ABI):
``tests/test_dali_defects.py`` checks the structure's size and field offsets. Needs a GPU and its driver;
everything else in the loader runs without this module doing anything.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

#: ``cudaVideoCodec`` values (cuviddec.h) for libavcodec's codec names (the samples' json ``codec``).
CUDA_VIDEO_CODEC = {"mpeg4": 2, "h264": 4, "mjpeg": 5, "hevc": 8, "vp8": 9, "vp9": 10, "av1": 11}
_CHROMA_420 = 1  # cudaVideoChromaFormat_420: what preprocess writes (yuv420p, 8 bits)


class _DecodeCaps(ctypes.Structure):
    """``CUVIDDECODECAPS``: 3 inputs, then what the driver fills in."""

    _fields_ = [
        ("eCodecType", ctypes.c_int),
        ("eChromaFormat", ctypes.c_int),
        ("nBitDepthMinus8", ctypes.c_uint),
        ("reserved1", ctypes.c_uint * 3),
        ("bIsSupported", ctypes.c_ubyte),
        ("nNumNVDECs", ctypes.c_ubyte),
        ("nOutputFormatMask", ctypes.c_ushort),
        ("nMaxWidth", ctypes.c_uint),
        ("nMaxHeight", ctypes.c_uint),
        ("nMaxMBCount", ctypes.c_uint),
        ("nMinWidth", ctypes.c_ushort),
        ("nMinHeight", ctypes.c_ushort),
        ("bIsHistogramSupported", ctypes.c_ubyte),
        ("nCounterBitDepth", ctypes.c_ubyte),
        ("nMaxHistogramBins", ctypes.c_ushort),
        ("reserved3", ctypes.c_uint * 10),
    ]


class NvdecUnavailable(RuntimeError):
    """The driver's video library cannot be loaded or asked (no GPU, no driver, or a container without the
    ``video`` driver capability)."""


@dataclass(frozen=True)
class DecoderCaps:
    """One codec's NVDEC capabilities on one GPU (8-bit 4:2:0)."""

    codec: str
    supported: bool
    engines: int
    """NVDEC engines that decode this codec."""
    min_size: tuple[int, int]
    """Smallest (width, height) in pixels."""
    max_size: tuple[int, int]
    """Largest (width, height) in pixels."""


def _load(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(name)
    except OSError as e:
        hint = " (in a container, NVIDIA_DRIVER_CAPABILITIES must include video)" if "nvcuvid" in name else ""
        raise NvdecUnavailable(f"{name} cannot be loaded: {e}{hint}") from None


def _check(result: int, call: str) -> None:
    if result != 0:
        raise NvdecUnavailable(f"{call} failed with CUDA driver error {result}")


def decoder_caps(codecs, device_index: int = 0) -> dict[str, DecoderCaps]:
    """NVDEC's capabilities for each of ``codecs`` (libavcodec names) on GPU ``device_index`` (the CUDA
    runtime's numbering, as torch's ``cuda:N``). Raises :class:`NvdecUnavailable` when the driver cannot be
    asked, ValueError for a codec NVDEC has no number for."""
    unknown = sorted(set(codecs) - set(CUDA_VIDEO_CODEC))
    if unknown:
        raise ValueError(f"NVDEC has no codec named {', '.join(unknown)}")
    cuda, cuvid = _load("libcuda.so.1"), _load("libnvcuvid.so.1")
    device, context = ctypes.c_int(), ctypes.c_void_p()
    _check(cuda.cuInit(0), "cuInit")
    _check(cuda.cuDeviceGet(ctypes.byref(device), device_index), "cuDeviceGet")
    _check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
    try:
        _check(cuda.cuCtxPushCurrent_v2(context), "cuCtxPushCurrent")
        try:
            found = {}
            for codec in sorted(set(codecs)):
                caps = _DecodeCaps(eCodecType=CUDA_VIDEO_CODEC[codec], eChromaFormat=_CHROMA_420, nBitDepthMinus8=0)
                _check(cuvid.cuvidGetDecoderCaps(ctypes.byref(caps)), f"cuvidGetDecoderCaps({codec})")
                found[codec] = DecoderCaps(codec, bool(caps.bIsSupported), int(caps.nNumNVDECs),
                                           (int(caps.nMinWidth), int(caps.nMinHeight)), (int(caps.nMaxWidth), int(caps.nMaxHeight)))
            return found
        finally:
            cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    finally:
        cuda.cuDevicePrimaryCtxRelease_v2(device)


def nvdec_engines(codecs, device_index: int = 0) -> int:
    """NVDEC engines available to every codec of ``codecs`` on that GPU (the least over the codecs); raises
    :class:`NvdecUnavailable` when one is not supported or the driver cannot be asked."""
    caps = decoder_caps(codecs, device_index)
    unsupported = sorted(c for c, cap in caps.items() if not cap.supported or cap.engines < 1)
    if unsupported:
        raise NvdecUnavailable(f"this GPU's NVDEC does not decode {', '.join(unsupported)} (8-bit 4:2:0)")
    return min(cap.engines for cap in caps.values())
