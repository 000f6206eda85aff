"""Loader: speed-resampled clips from WebDataset video shards, via DALI or a plain-PyTorch reference backend.

    from pipeline import LoaderConfig, build_loader, list_shards
    loader = build_loader(list_shards("OUT", split="train"), LoaderConfig(mode="pretrain"))

See docs/pipeline.md for the batch format and docs/design.md §2 for the sampling semantics.
"""

from pipeline.config import DEFAULT_SPEEDS, ClipConfig, LoaderConfig
from pipeline.loader import VideoLoader, build_loader
from pipeline.io.remote import RemoteOptions
from pipeline.sampler import ClipSet, SpeedSampler, order_label, sample_rng
from pipeline.io.shard_reader import BadSampleError, list_shards

__all__ = ["ClipConfig", "DEFAULT_SPEEDS", "LoaderConfig", "build_loader", "VideoLoader", "SpeedSampler", "ClipSet", "order_label", "sample_rng",
           "list_shards", "BadSampleError", "RemoteOptions"]
