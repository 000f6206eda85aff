#!/usr/bin/env bash
# The GPU check in the image or in a set-up checkout with ffmpeg (no offline bundle needed): builds the check's
# shard sets, then runs device/check.py through docker/gpu_check.py. On a machine without Docker, network or
# ffmpeg, use the offline bundle instead: make device-bundle here, bash .device/run.sh there (docs/gpu.md).
#
#   docker/gpu_check.sh                  # or: docker/run.sh /app/docker/gpu_check.sh
#
# Environment: WORK [a fresh temp dir, removed at exit] (WORK/.device/shards holds the sets; reused when present),
# OUT [WORK/.device/out] (gpu_check.json), CHECK_TIMEOUT [400 s]. Exit status: the check's (0: no row failed, 1: one did).
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd -- "$repo"
python=${PYTHON:-python3}
if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; fi

work=${WORK:-$(mktemp -d)}
if [[ -z ${WORK:-} ]]; then
    trap 'rm -rf -- "$work"' EXIT
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [[ ! -d $work/.device/shards ]]; then
    "$python" -m device.bundle --sets-only --out "$work/.device"
fi
export OUT=${OUT:-$work/.device/out}
timeout -k 15 "${CHECK_TIMEOUT:-400}" "$python" docker/gpu_check.py --bundle "$work/.device"
