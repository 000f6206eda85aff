"""3D CNN backbones (C3D, R3D-18, R(2+1)D-18), temporal group normalization, and the pretext/fine-tune heads."""

from .backbones import BACKBONES, DEFAULT_TGN_GROUPS, build_backbone
from .heads import ClassifierHead, SpeedClassHead, SpeedSortHead, num_orderings
from .networks import PretextModel, VideoClassifier, load_pretrained_backbone
from .tgn import TemporalGroupNorm, convert_sync_batchnorm, temporal_group_sizes, tgn_norm_layer

__all__ = [
    "BACKBONES",
    "DEFAULT_TGN_GROUPS",
    "build_backbone",
    "TemporalGroupNorm",
    "tgn_norm_layer",
    "temporal_group_sizes",
    "convert_sync_batchnorm",
    "SpeedSortHead",
    "SpeedClassHead",
    "ClassifierHead",
    "num_orderings",
    "PretextModel",
    "VideoClassifier",
    "load_pretrained_backbone",
]
