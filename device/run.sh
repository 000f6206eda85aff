#!/usr/bin/env bash
# The GPU check from the offline bundle: the only command to run on the GPU machine (docs/gpu.md
# "The GPU check without Docker or network"). `make device-bundle` copies this file to .device/run.sh.
#
#   bash .device/run.sh receive   after a transfer that carried a DALI part: check the parts there so far
#   bash .device/run.sh           after the last transfer: join the DALI parts, install the bundle's wheels
#                                 into .device/site (never from the network), run the check
#
# Environment: OUT [.device/out] (where gpu_check.json goes), PYTHON [python3] (the machine's Python with torch),
# CHECK_TIMEOUT [400 s] (hard stop of the check; its rows keep their own budgets inside it), SPEEDSSL_REPO
# [the folder above the bundle]. Exit status: the check's (0: no row failed, 1: a row failed), 124 on the hard stop.
set -euo pipefail

bundle=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "${SPEEDSSL_REPO:-$bundle/..}" && pwd)
python=${PYTHON:-python3}
cd -- "$repo"

if [[ ${1:-} == receive ]]; then
    exec "$python" device/install.py --bundle "$bundle" --receive
fi
"$python" device/install.py --bundle "$bundle"
export OUT=${OUT:-$bundle/out}
export PYTHONPATH="$bundle/site:$repo${PYTHONPATH:+:$PYTHONPATH}"
exec timeout -k 15 "${CHECK_TIMEOUT:-400}" "$python" device/check.py --bundle "$bundle"
