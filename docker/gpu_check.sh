#!/usr/bin/env bash
# GPU readiness check: one prepared run, under 8 minutes on one GPU, one summary table at the end.
# Run in the image or in a set-up checkout (no Docker needed); the checks are in docker/gpu_check.py:
#
#   docker/gpu_check.sh                  # or: docker/run.sh /app/docker/gpu_check.sh
#
# 1. identity_vp9 / identity_h264: DALI `mixed` (NVDEC) returns exactly the frames the sampler drew, every
#    speed in both directions, on frame-numbered VP9 and H.264 shards (streams cut by pipeline/dali/stream_cut.py).
# 2. mjpeg_routing: MJPEG shards (which the mixed decoder refuses) are routed to a host path, frame-exact.
# 3. loader_dali_gpu / loader_reference: loader clips/s on 300-frame videos, DALI mixed vs the reference
#    backend with 16 workers, and DALI's decoded frames per returned frame vs a seeking decoder's.
# 4. pretrain: a short R(2+1)D-18 bf16 pretrain with the DALI GPU loader: training clips/s and data-wait %.
#
# Environment: WORK [a fresh temp dir, removed at exit], STEPS [40], BATCH [16], CHECK_TIMEOUT [450 s].
# Exit status 0 when every check passes, 1 when one fails, 2 without a GPU.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo"
python=${PYTHON:-python3}
if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
    exit 2
fi
nvidia-smi -L

work=${WORK:-$(mktemp -d)}
if [[ -z ${WORK:-} ]]; then
    trap 'rm -rf -- "$work"' EXIT
fi
export GPU_CHECK_WORK=$work GPU_CHECK_STEPS=${STEPS:-40} GPU_CHECK_BATCH=${BATCH:-16}

# the checkout's code first, whatever else is installed
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" timeout "${CHECK_TIMEOUT:-450}" "$python" docker/gpu_check.py
