"""Whole networks: the pretext model (shared backbone over K clips + heads), the fine-tuning classifier, and the
one function that carries a pretrained backbone from the first to the second."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from .heads import ClassifierHead, SpeedClassHead, SpeedSortHead

__all__ = ["PretextModel", "VideoClassifier", "load_pretrained_backbone", "PRETEXT_HEADS"]

PRETEXT_HEADS = ("sort", "speed", "both")


class PretextModel(nn.Module):
    """Backbone shared over the ``K`` clips of a sample, plus the sorting and/or per-clip speed head.

    Args:
        backbone: maps ``(N, 3, T, H, W)`` to ``(N, backbone.out_features)``.
        num_clips: ``K`` clips per sample.
        num_speeds: speed classes for the per-clip head.
        head: ``"sort"`` (``K!``-way ordering), ``"speed"`` (per-clip speed) or ``"both"``.
        hidden: width of the sorting head's pair layer.
        dropout: dropout before each head's last linear layer.

    State-dict keys: ``backbone.*``, ``sort_head.*``, ``speed_head.*``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_clips: int,
        num_speeds: int,
        head: str = "both",
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if head not in PRETEXT_HEADS:
            raise ValueError(f"head must be one of {PRETEXT_HEADS}, got {head!r}")
        self.backbone = backbone
        self.num_clips = num_clips
        features = int(backbone.out_features)
        self.sort_head = (
            SpeedSortHead(features, num_clips=num_clips, hidden=hidden, dropout=dropout)
            if head in ("sort", "both")
            else None
        )
        self.speed_head = (
            SpeedClassHead(features, num_speeds=num_speeds, dropout=dropout) if head in ("speed", "both") else None
        )

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        """``clips (B, K, 3, T, H, W)`` -> ``{"order_logits": (B, K!), "speed_logits": (B, K, num_speeds)}``
        (only the keys of the configured heads)."""
        if clips.dim() != 6 or clips.shape[1] != self.num_clips:
            raise ValueError(f"expected (B, {self.num_clips}, 3, T, H, W) clips, got {tuple(clips.shape)}")
        b, k = clips.shape[:2]
        # One backbone pass over all clips: batch norm statistics see the whole (B*K) batch.
        features = self.backbone(clips.flatten(0, 1))  # (B*K, D)
        features = features.reshape(b, k, -1)  # (B, K, D)
        out: dict[str, Tensor] = {}
        if self.sort_head is not None:
            out["order_logits"] = self.sort_head(features)
        if self.speed_head is not None:
            out["speed_logits"] = self.speed_head(features)
        return out


class VideoClassifier(nn.Module):
    """Backbone + dropout + linear classifier for fine-tuning. State-dict keys: ``backbone.*``, ``head.*``."""

    def __init__(self, backbone: nn.Module, *, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassifierHead(int(backbone.out_features), num_classes=num_classes, dropout=dropout)

    def features(self, clips: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, out_features)``: the backbone's clip features (for retrieval)."""
        return self.backbone(clips)

    def forward(self, clips: Tensor) -> Tensor:
        """``(B, 3, T, H, W) -> (B, num_classes)`` logits."""
        return self.head(self.backbone(clips))


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_HEAD_PREFIXES = ("sort_head.", "speed_head.", "head.")  # PretextModel's heads, VideoClassifier's head


def _strip_wrappers(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def load_pretrained_backbone(classifier: VideoClassifier, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Copy the backbone weights (``backbone.*`` keys) of a :class:`PretextModel` or of another
    :class:`VideoClassifier` (e.g. fine-tuned on another dataset) into ``classifier.backbone``.

    The heads' keys (pretext: ``sort_head.*``, ``speed_head.*``; classifier: ``head.*``) are not used, and their
    names are returned (e.g. ``["head"]``) so the caller can say so; ``module.`` / ``_orig_mod.`` prefixes
    (DDP, torch.compile) are stripped. Raises ``ValueError`` naming every missing, unexpected or mis-shaped
    backbone key (e.g. a BN checkpoint into a TGN classifier, or another backbone/width), and for any other key.
    The classifier's own head is left as initialised.
    """
    backbone_state: dict[str, Tensor] = {}
    stray: list[str] = []
    dropped: set[str] = set()
    for raw_key, value in state_dict.items():
        key = _strip_wrappers(raw_key)
        if key.startswith("backbone."):
            backbone_state[key[len("backbone.") :]] = value
        elif key.startswith(_HEAD_PREFIXES):
            dropped.add(key.split(".", 1)[0])
        else:
            stray.append(raw_key)
    expected = classifier.backbone.state_dict()
    missing = sorted(f"backbone.{k}" for k in set(expected) - set(backbone_state))
    unexpected = sorted(f"backbone.{k}" for k in set(backbone_state) - set(expected))
    mis_shaped = sorted(
        f"backbone.{k}: checkpoint {tuple(backbone_state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(backbone_state)
        if backbone_state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing backbone keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected backbone keys ({len(unexpected)}): {unexpected}")
    if mis_shaped:
        problems.append(f"mis-shaped backbone tensors ({len(mis_shaped)}): {mis_shaped}")
    if stray:
        problems.append(f"keys that are neither backbone.* nor head keys ({len(stray)}): {sorted(stray)}")
    if problems:
        raise ValueError("cannot load pretrained backbone: " + "; ".join(problems))
    classifier.backbone.load_state_dict(backbone_state, strict=True)
    return sorted(dropped)
