#!/usr/bin/env bash
# Run the speedssl image on this machine's GPUs: `docker run` with the GPUs, shared memory and mounts set.
#
#   docker/run.sh pretrain --data data/k400 --out runs/k400        train.py on all GPUs of this machine
#   DATA_READONLY=0 VIDEOS_DIR=/mnt/k400 \
#     docker/run.sh preprocess videos data/k400                     any executable in the image runs as is
#   NNODES=4 NODE_RANK=0 RDZV_ENDPOINT=node0:29500 RDZV_ID=k400 \
#     docker/run.sh pretrain ...                                    one of 4 nodes (same command on each, own NODE_RANK)
#
# Environment (defaults in brackets): IMAGE [speedssl:latest], GPUS [all] (docker --gpus value),
# NPROC_PER_NODE [gpu: one process per GPU; 0 = plain python, no torchrun], SHM_SIZE [16g],
# DATA_DIR [REPO/data, at /app/data], DATA_READONLY [1; 0 mounts data writable], RUNS_DIR [REPO/runs, at /app/runs],
# VIDEOS_DIR [unset; mounted read-only at /app/videos when set], NNODES, NODE_RANK, RDZV_ENDPOINT, RDZV_ID,
# NCCL_* and MASTER_* (passed through), DOCKER [docker].
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
data_dir=${DATA_DIR:-$repo/data}
runs_dir=${RUNS_DIR:-$repo/runs}
mkdir -p -- "$runs_dir"

args=(run --rm --init
    --gpus "${GPUS:-all}"
    # DALI's pinned buffers and DataLoader workers live in /dev/shm; docker's 64 MB default is far too small.
    --shm-size "${SHM_SIZE:-16g}"
    --ulimit memlock=-1 --ulimit stack=67108864
    # Files written to runs/ belong to the caller, not to the image's user; HOME for caches of any UID.
    --user "$(id -u):$(id -g)" -e HOME=/tmp
    -e "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video"
    -v "$data_dir:/app/data$([[ ${DATA_READONLY:-1} == 0 ]] || echo :ro)"
    -v "$runs_dir:/app/runs")
if [[ -n ${VIDEOS_DIR:-} ]]; then
    args+=(-v "$VIDEOS_DIR:/app/videos:ro")
fi
if [[ ${NPROC_PER_NODE:-gpu} != 0 ]]; then
    args+=(-e "NPROC_PER_NODE=${NPROC_PER_NODE:-gpu}")
fi
if [[ -n ${NNODES:-} && ${NNODES} != 1 ]]; then
    # NCCL and the c10d rendezvous talk to the other nodes directly: use the host's network stack (and its
    # InfiniBand/RoCE devices, when there are any).
    args+=(--network host -e "NNODES=$NNODES" -e NODE_RANK -e RDZV_ENDPOINT -e RDZV_ID)
    if [[ -d /dev/infiniband ]]; then
        args+=(--device /dev/infiniband --cap-add IPC_LOCK)
    fi
fi
while IFS= read -r name; do
    args+=(-e "$name")
done < <(compgen -e | grep -E '^(NCCL_|MASTER_)' || true)
if [[ -t 0 && -t 1 ]]; then
    args+=(-it)
fi

exec "${DOCKER:-docker}" "${args[@]}" "${IMAGE:-speedssl:latest}" "$@"
