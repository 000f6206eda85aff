#!/usr/bin/env bash
# Container entrypoint: run train.py, under torchrun when a distributed launch is asked for.
#
#   entrypoint.sh pretrain --data data/k400 --out runs/k400    one process:  python train.py ARGS
#   NPROC_PER_NODE=8 entrypoint.sh ARGS                        one node:     torchrun --standalone ... train.py ARGS
#   NNODES=4 NODE_RANK=r RDZV_ENDPOINT=host:29500 \
#     RDZV_ID=job42 NPROC_PER_NODE=8 entrypoint.sh ARGS         many nodes:   torchrun --rdzv-backend c10d ... train.py ARGS
#   entrypoint.sh bash | preprocess SRC OUT | nvidia-smi ...    anything that names an executable runs as is
#
# Environment: NPROC_PER_NODE (processes per node, default `gpu` = one per visible GPU), NNODES (default 1),
# NODE_RANK, RDZV_ENDPOINT (HOST:PORT of node 0, required when NNODES is not 1), RDZV_ID (job id shared by
# all nodes, default speedssl), TRAIN_SCRIPT (default /app/train.py), PYTHON (default python).
set -euo pipefail

script=${TRAIN_SCRIPT:-/app/train.py}
python=${PYTHON:-python}

# An executable name first (bash, preprocess, python, nvidia-smi, /app/docker/gpu_check.sh ...) runs as is.
# `type -P` only finds files, so train.py's subcommands (pretrain, finetune, eval) never match.
if [[ $# -gt 0 && $1 != -* ]] && type -P -- "$1" >/dev/null; then
    exec "$@"
fi

if [[ -z ${NPROC_PER_NODE:-} && -z ${NNODES:-} ]]; then
    exec "$python" "$script" "$@"
fi

nnodes=${NNODES:-1}
launch=(torchrun --nnodes "$nnodes" --nproc-per-node "${NPROC_PER_NODE:-gpu}")
if [[ $nnodes == 1 ]]; then
    # One node: a private rendezvous on a free local port, nothing to configure.
    launch+=(--standalone)
else
    if [[ -z ${RDZV_ENDPOINT:-} ]]; then
        echo "entrypoint.sh: NNODES=$nnodes needs RDZV_ENDPOINT=HOST:PORT (node 0's address, reachable from every node)" >&2
        exit 2
    fi
    # c10d rendezvous: every node runs the same command; ranks are assigned when all NNODES have joined
    # (torchrun only uses --node-rank with the static backend; passing it keeps the recipe explicit).
    if [[ -n ${NODE_RANK:-} ]]; then
        launch+=(--node-rank "$NODE_RANK")
    fi
    launch+=(--rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "${RDZV_ID:-speedssl}")
fi
exec "${launch[@]}" "$script" "$@"
