"""Helpers of `train.py` that are neither model, loader nor preprocessing: configs, CUDA-stream prefetching,
checkpoints, DDP set-up, optimizer/schedule, metrics, logs."""
