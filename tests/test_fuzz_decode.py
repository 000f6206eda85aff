"""Property-based fuzzing of every place that parses video bytes: random, truncated, bit-flipped and zeroed
variants of real videos go through

* ``preprocess``'s per-file validation (``media.check_source``, and the whole per-file step
  ``media.process_video``: probe, transcode, validate by decoding);
* the reference loader's decode path (``reference.load_sample`` on a shard holding the bytes);
* the DALI CPU loader (``build_loader(backend="dali")`` on such a shard) in a separate worker process, so a
  SIGSEGV/SIGFPE inside DALI or libavcodec fails the test instead of killing pytest.

The property: a clean, named error every time (``Rejection`` with a reason, ``BadSampleError`` naming the
shard and key) or a correct result, never another exception and never a dead process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reliability_helpers import PYTHON, REPO, decodable_frames

from pipeline import BadSampleError, LoaderConfig
from pipeline.reference.stream import load_sample
from pipeline.io.shard_reader import scan_shards
from preprocess.media import EncodeParams, Rejection, SourceInfo, _Reject, check_source, process_video
from synthetic.videos import write_numbered_video

CFG = LoaderConfig(mode="finetune", num_frames=4, batch_size=1, resize=32, crop_size=32, augment=False)
# stored frames are 96x64 yuv420p: resize 64 needs no resizing, so crops go straight into the clips (YuvClipWriter)
DIRECT_CFG = LoaderConfig(mode="pretrain", num_frames=4, speeds=(-2, 1, 2), num_clips=2, batch_size=1, resize=64, crop_size=32)
STAGES = {"input", "probe", "transcode", "validate"}
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> bytes:
    """A typical camera-style source (H.264 in MP4): what preprocess reads."""
    return write_numbered_video(tmp_path_factory.mktemp("src") / "s.mp4", num_frames=20, width=96, height=64).read_bytes()


@st.composite
def damaged(draw, base: bytes) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "bitflip", "zeroed", "prefix"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "truncated":
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == "prefix":  # garbage in front of a valid file
        return draw(st.binary(min_size=1, max_size=64)) + base
    data = bytearray(base)
    if kind == "bitflip":
        for _ in range(draw(st.integers(1, 24))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    else:  # a zeroed run, as a bad disk sector would leave
        start = draw(st.integers(0, len(data) - 1))
        length = draw(st.integers(1, 512))
        data[start:start + length] = bytes(len(data[start:start + length]))
    return bytes(data)


# ------------------------------------------------------------------------------------------- preprocess


@given(data=st.data())
@FUZZ
def test_check_source_returns_info_or_a_named_rejection(source, data):
    blob = data.draw(damaged(source))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.mp4"
        path.write_bytes(blob)
        try:
            info = check_source(path)
        except _Reject as rej:
            event(f"rejected at {rej.rejection.stage}")
            assert rej.rejection.reason and rej.rejection.stage in STAGES
        else:
            assert isinstance(info, SourceInfo) and info.width > 0 and info.height > 0


@pytest.mark.slow
@given(data=st.data())
@settings(FUZZ, max_examples=15)
def test_process_video_writes_an_exact_video_or_rejects_it(source, data):
    """The whole per-file step never raises; what it keeps decodes to exactly the frames it reports."""
    blob = data.draw(damaged(source))
    with tempfile.TemporaryDirectory() as tmp:
        src, staging = Path(tmp) / "in.mp4", Path(tmp) / "staging"
        staging.mkdir()
        src.write_bytes(blob)
        outcome = process_video(src, staging, "k", EncodeParams(short_side=64, min_frames=4))
        event("rejected" if isinstance(outcome, Rejection) else "written")
        if isinstance(outcome, Rejection):
            assert outcome.reason and outcome.stage in STAGES
            assert list(staging.iterdir()) == []  # nothing half-written left behind
        else:
            (segment,) = outcome
            assert decodable_frames((staging / segment.file).read_bytes()) == segment.frames >= 4
            assert [p.name for p in staging.iterdir()] == [segment.file]


# -------------------------------------------------------------------------------------- reference loader


def _shard_with(directory: Path, video: bytes, meta: bytes) -> str:
    import io
    import tarfile

    path = directory / "fuzz.tar"
    with tarfile.open(path, "w") as tar:
        for name, blob in (("clip.mp4", video), ("clip.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return str(path)


@pytest.mark.parametrize("cfg,shape", [(CFG, (1, 4, 32, 32, 3)), (DIRECT_CFG, (2, 4, 32, 32, 3))], ids=["resized", "direct"])
@given(data=st.data())
@FUZZ
def test_reference_decode_gives_clips_or_a_named_error(tiny_sample, cfg, shape, data):
    blob = data.draw(damaged(tiny_sample["mp4"]))
    with tempfile.TemporaryDirectory() as tmp:
        shard = _shard_with(Path(tmp), blob, tiny_sample["json"])
        ((record,), bad) = scan_shards([shard])
        assert bad == []
        result = load_sample(record, 0, cfg, epoch=0)
        event(result.reason.split(":")[0][:40] if isinstance(result, BadSampleError) else "decoded")
        if isinstance(result, BadSampleError):
            assert (result.shard, result.key) == (shard, "clip") and result.reason
        else:
            assert tuple(result.clips.shape) == shape
            assert list(result.frame_indices[0]) == list(range(result.frame_indices[0][0], result.frame_indices[0][0] + 4))


# ------------------------------------------------------------------------------------------ DALI loader

_WORKER = r"""
import json, sys
from pipeline import BadSampleError, LoaderConfig, build_loader
cfg = LoaderConfig(mode="finetune", num_frames=4, batch_size=1, resize=32, crop_size=32, augment=False)
print("ready", flush=True)
for line in sys.stdin:
    shard = line.strip()
    try:
        batch = next(iter(build_loader([shard], cfg, backend="dali", num_workers=1)))
        reply = {"ok": list(batch["clips"].shape)}
    except BadSampleError as e:
        reply = {"bad": [e.shard, e.key, e.reason]}
    except Exception as e:
        reply = {"other": f"{type(e).__name__}: {e}"[:500]}
    print(json.dumps(reply), flush=True)
"""


class DaliWorker:
    """A long-lived process running the DALI CPU loader on one shard per request; restarted if it dies."""

    def __init__(self):
        self.proc = None

    def _start(self):
        self.proc = subprocess.Popen([PYTHON, "-c", _WORKER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, shard: str) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(shard + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"died": code}
        return json.loads(line)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def dali_worker():
    worker = DaliWorker()
    yield worker
    worker.close()


def test_dali_worker_control(tiny_sample, dali_worker, tmp_path):
    """The control: the intact bytes decode in the worker, so a fuzzed 'ok' or 'bad' means something."""
    assert dali_worker.ask(_shard_with(tmp_path, tiny_sample["mp4"], tiny_sample["json"])) == {"ok": [1, 1, 3, 4, 32, 32]}


@pytest.mark.slow
@given(data=st.data())
@settings(FUZZ, max_examples=20)
def test_dali_cpu_decode_gives_clips_or_a_named_error_and_never_crashes(tiny_sample, dali_worker, data):
    blob = data.draw(damaged(tiny_sample["mp4"]))
    with tempfile.TemporaryDirectory() as tmp:
        shard = _shard_with(Path(tmp), blob, tiny_sample["json"])
        reply = dali_worker.ask(shard)
    event(str(reply.get("bad", ["", "", next(iter(reply))])[2]).split(":")[0][:40])
    assert "died" not in reply, f"the DALI loader process died (exit status {reply.get('died')}) on these bytes"
    assert "other" not in reply, f"unnamed error: {reply.get('other')}"
    if "bad" in reply:
        assert reply["bad"][:2] == [shard, "clip"] and reply["bad"][2]
    else:
        assert reply == {"ok": [1, 1, 3, 4, 32, 32]}


def test_a_valid_video_with_non_utf8_metadata_is_written_not_rejected(tmp_path, source):
    """Found by the fuzzer above: PyAV raised UnicodeDecodeError on a Latin-1 title tag, so a good video
    was rejected as an 'unexpected error'. Old AVI/MKV files often carry such tags."""
    plain = tmp_path / "plain.mp4"
    plain.write_bytes(source)
    tagged = tmp_path / "latin1.mkv"
    subprocess.run([b"ffmpeg", b"-v", b"error", b"-i", bytes(plain), b"-c", b"copy", b"-metadata", b"title=caf\xe9 \xff",
                    bytes(tagged)], check=True)
    assert check_source(tagged).width == 96
    staging = tmp_path / "staging"
    staging.mkdir()
    (segment,) = process_video(tagged, staging, "k", EncodeParams(short_side=64, min_frames=4))
    assert segment.frames == decodable_frames((staging / segment.file).read_bytes()) == 20
