"""Run configuration: one frozen dataclass per concern, and the one place where the CLI overrides them.

Every field has a docstring (with its unit) right under it; :func:`build_parser` turns those docstrings
into ``--help`` text, so the help and the code cannot drift apart. A resolved :class:`TrainConfig`
round-trips through plain JSON types (:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict`),
which is how it is stored in ``config.json`` and inside checkpoints (``torch.load(weights_only=True)``
accepts plain dicts, lists, strings and numbers).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import textwrap
import typing
from dataclasses import dataclass, field
from functools import cache

from model.backbones import BACKBONES, DEFAULT_TGN_GROUPS
from pipeline.config import ClipConfig
from pipeline.io.remote import RemoteOptions
from pipeline.routing import BACKENDS, GPU_DECODE_THREADS
from training.presets import PRESETS, preset_names

MODES = ("pretrain", "finetune", "eval")
ARCHS = tuple(BACKBONES)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class DataConfig(ClipConfig):
    """Where the shards are and how clips are cut from them (clip settings: pipeline.ClipConfig, docs/design.md §2)."""

    data: str = ""
    """Folder written by `preprocess` (holds manifest.json and shards/). Pretrain/finetune train on it; eval queries its test split against its train split."""
    train_split: str = "train"
    """Split trained on (and the retrieval gallery in eval)."""
    test_split: str = "test"
    """Split evaluated (the retrieval queries in eval)."""
    backend: str = "auto"
    """Loader backend: auto (DALI GPU if CUDA, else reference), dali, or reference."""
    batch_size: int = 8
    """Samples per step per rank (a pretext sample holds num_clips clips)."""
    eval_batch_size: int = 8
    """Videos per eval batch per rank (each holds num_eval_clips clips)."""
    num_workers: int = 2
    """Loader worker processes per rank: reference decoders, or with DALI the processes that cut local streams (and DALI's CPU decoder threads)."""
    gpu_decode_threads: int = GPU_DECODE_THREADS
    """DALI GPU (mixed, NVDEC) decoder threads per rank: videos decoded at once on the GPU (0 = derived from the NVDEC engines the GPU reports, see pipeline/routing.py)."""
    augment: bool = True
    """Random crop and flip while training (eval is always centre crop, no flip)."""
    storage_options: str = ""
    """When --data is a URL (https://, s3://, gs://, ...): fsspec storage options as a JSON object. Stored in config.json and checkpoints, so give credentials through the environment instead."""
    shard_cache: str = ""
    """When --data is a URL: local folder keeping every member read, so later epochs make no requests (empty = no cache)."""
    read_retries: int = RemoteOptions.retries
    """When --data is a URL: retries of a failed read (with backoff) before the sample counts as bad."""
    read_timeout: float = RemoteOptions.timeout_s
    """When --data is a URL: limit on one read, in seconds."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _check(self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1")
        _check(self.num_workers >= 0, "num_workers must be >= 0")
        _check(self.gpu_decode_threads >= 0, "gpu_decode_threads must be >= 0 (0: derived from the GPU)")
        _check(self.read_retries >= 0 and self.read_timeout > 0, "need read_retries >= 0 and read_timeout > 0")


@dataclass(frozen=True)
class ModelConfig:
    """The backbone and the heads on top of it."""

    arch: str = "r3d_18"
    """Backbone: c3d, r3d_18 or r2plus1d_18."""
    base_width: int = 64
    """Channels of the backbone's first stage (64 = the published networks; 8-16 for CPU demos)."""
    norm: str = "bn"
    """Normalization: bn (BatchNorm3d) or tgn (temporal group normalization)."""
    tgn_groups: tuple[int, ...] = DEFAULT_TGN_GROUPS
    """TGN: temporal groups per stage (1 = plain batch norm)."""
    head: str = "both"
    """Pretext loss: sort (permutation that sorts the clips by speed), speed (each clip's speed), or both (sum)."""
    hidden: int = 512
    """Width of the pretext head's hidden layer."""
    dropout: float = 0.5
    """Dropout before the last layer of each head (probability)."""

    def __post_init__(self) -> None:
        _check(self.arch in ARCHS, f"arch must be one of {ARCHS}, got {self.arch!r}")
        _check(self.base_width >= 1, "base_width must be >= 1")
        _check(self.norm in ("bn", "tgn"), f"norm must be bn or tgn, got {self.norm!r}")
        _check(len(self.tgn_groups) > 0 and all(g >= 1 for g in self.tgn_groups), "tgn_groups must be positive")
        _check(self.head in ("sort", "speed", "both"), f"head must be sort, speed or both, got {self.head!r}")
        _check(self.hidden >= 1, "hidden must be >= 1")
        _check(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, schedule and length of the run."""

    optimizer: str = "sgd"
    """sgd (with momentum, Nesterov off) or adamw."""
    lr: float = 0.05
    """Peak learning rate, reached at the end of warmup (per run, not scaled by world size)."""
    momentum: float = 0.9
    """SGD momentum (AdamW: beta1)."""
    weight_decay: float = 5e-4
    """Decoupled (AdamW) or L2 (SGD) weight decay; not applied to norm layers and biases."""
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr (clipped to a tenth of the run if longer)."""
    min_lr_ratio: float = 0.01
    """Cosine decay ends at lr * min_lr_ratio."""
    grad_clip: float = 1.0
    """Max global gradient norm (0 = no clipping)."""
    epochs: int = 10
    """Passes over the training split (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Total optimizer steps of the run (0 = epochs * batches per epoch)."""
    freeze_backbone: bool = False
    """finetune: linear probe. Only the classifier trains; the backbone's weights and its BN/TGN statistics stay as loaded."""

    def __post_init__(self) -> None:
        _check(self.optimizer in ("sgd", "adamw"), f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        _check(self.lr > 0 and math.isfinite(self.lr), "lr must be positive")
        _check(0.0 <= self.momentum < 1.0, "momentum must be in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]")
        _check(self.grad_clip >= 0, "grad_clip must be >= 0")
        _check(self.epochs >= 1, "epochs must be >= 1")
        _check(self.max_steps >= 0, "max_steps must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go, what to start from, and how the loop runs."""

    out: str = "runs/default"
    """Run folder: config.json, metrics.jsonl, checkpoint.pt, curves.png (eval: eval.json)."""
    init: str = "scratch"
    """finetune: a pretrain checkpoint to take the backbone from, or `scratch`. eval: the checkpoint to evaluate (a pretrain checkpoint gives pretext accuracy and retrieval only), or `scratch` for a random-init baseline."""
    resume: bool = False
    """Continue the run in --out from its checkpoint.pt: same step, same data order, same RNG streams."""
    seed: int = 0
    """Seeds model init, dropout and the loader's sampling."""
    ckpt_every: int = 0
    """Write checkpoint.pt every this many steps (0 = at the end of each epoch only); always at the end."""
    stop_after: int = 0
    """Leave the loop after this many steps of this process, as a pre-emption would (0 = never). For resume drills."""
    log_every: int = 10
    """Print a log line every this many steps (metrics.jsonl gets every step)."""
    device: str = "auto"
    """auto (cuda:LOCAL_RANK if available, else cpu), cpu, or cuda."""
    amp: bool = True
    """bf16 autocast on GPU (no effect on CPU)."""
    channels_last: bool = True
    """channels_last_3d memory format for model and input on GPU (no effect on CPU, nor with --norm tgn, whose grouped view needs the default layout)."""
    compile: bool = False
    """torch.compile the model (checkpoints still hold the plain module's weights)."""
    sync_bn: bool = True
    """Convert batch norm to SyncBatchNorm under multi-GPU DDP (no effect on CPU or one process)."""
    deterministic: bool = False
    """Deterministic kernels (slower on GPU; warn-only there, since 3D pooling has no deterministic CUDA backward). CPU runs are reproducible without it."""
    progress: bool = True
    """Rich live progress display (rank 0 only)."""
    tensorboard: bool = True
    """TensorBoard event files in --out beside metrics.jsonl (rank 0 only; skipped when the tensorboard package is not installed)."""

    def __post_init__(self) -> None:
        _check(bool(self.out), "out must be set")
        _check(bool(self.init), "init must be a path or `scratch`")
        _check(self.ckpt_every >= 0 and self.stop_after >= 0, "ckpt_every and stop_after must be >= 0")
        _check(self.log_every >= 1, "log_every must be >= 1")
        _check(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in config.json and in every checkpoint."""

    mode: str = "pretrain"
    """pretrain, finetune or eval."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        _check(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        _check(bool(self.data.data), "--data (a folder written by `preprocess`) is required")
        _check(self.mode != "pretrain" or self.model.head == "speed" or self.data.num_clips >= 2,
               f"--head {self.model.head} sorts clips: it needs --num-clips >= 2, got {self.data.num_clips}")
        _check(not (self.optim.freeze_backbone and self.mode == "pretrain"), "--freeze-backbone is for finetune (a linear probe)")

    def to_dict(self) -> dict:
        """Plain JSON types only (tuples become lists)."""
        return {"mode": self.mode, **{name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(mode=d["mode"], **{name: section_from_dict(sec, d.get(name, {})) for name, sec in SECTIONS.items()})


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def section_from_dict(section: type, values: dict):
    """Build one section from plain values, turning lists back into the tuples the fields declare."""
    hints = typing.get_type_hints(section)
    known = {f.name for f in dataclasses.fields(section)}
    unknown = set(values) - known
    _check(not unknown, f"unknown {section.__name__} fields: {sorted(unknown)}")
    return section(**{k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in values.items()})


@cache
def field_docs(section: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass and of the dataclasses it extends (read from their source)."""
    docs = {}
    for cls in reversed([c for c in section.__mro__ if dataclasses.is_dataclass(c)]):
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.replace(" ", "").split(",") if x)


def build_parser() -> argparse.ArgumentParser:
    """``train.py {pretrain,finetune,eval} [--option value ...]``; every dataclass field is one option."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Self-supervised pretraining by playback-speed prediction, action-recognition fine-tuning, and evaluation. "
        "Run under `torchrun --nproc_per_node N` for DDP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="mode", required=True, metavar="{pretrain,finetune,eval}")
    about = {
        "pretrain": "Speed-prediction pretext task on (unlabelled) shards: sorting permutation and/or per-clip speed loss.",
        "finetune": "Action classification on labelled shards, from a pretrain checkpoint (--init PATH) or from scratch.",
        "eval": "Clip and video accuracy on --test-split, and nearest-neighbour retrieval (test queries, train gallery), "
        "written to OUT/eval.json. Model settings come from the --init checkpoint.",
    }
    for mode in MODES:
        sub = commands.add_parser(mode, help=about[mode], description=about[mode], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--preset", choices=preset_names(mode), default=argparse.SUPPRESS,
                         help="start from a named protocol (options given on the command line still win): "
                         + "; ".join(f"{name}: {PRESETS[mode, name].about}" for name in preset_names(mode)) + " (docs/reproduce.md)")
        for name, section in SECTIONS.items():
            group = sub.add_argument_group(name, section.__doc__)
            docs = field_docs(section)
            hints = typing.get_type_hints(section)
            own = section.__dict__.get("__annotations__", {})  # a section's own fields first, then the inherited clip settings
            for f in sorted(dataclasses.fields(section), key=lambda f: f.name not in own):
                kind, default = hints[f.name], f.default
                kwargs: dict = {"dest": f"{name}.{f.name}", "default": argparse.SUPPRESS, "help": docs[f.name] + f" (default: {_show(default)})"}
                if kind is bool:
                    kwargs["action"] = argparse.BooleanOptionalAction
                elif typing.get_origin(kind) is tuple:
                    kwargs.update(type=_int_tuple, metavar="A,B,...")
                else:
                    kwargs.update(type=kind, metavar=f.name.upper())
                group.add_argument(_flag(f.name), **kwargs)
    return parser


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def parse_overrides(argv: list[str] | None) -> tuple[str, dict[str, dict]]:
    """The mode and only the options given on the command line: ``{"optim": {"lr": 0.1}, ...}``, plus
    ``"preset": NAME`` when ``--preset`` is given (train.py layers it under the command line)."""
    ns = vars(build_parser().parse_args(argv))
    mode = ns.pop("mode")
    overrides: dict = {name: {} for name in SECTIONS}
    if "preset" in ns:
        overrides["preset"] = ns.pop("preset")
    for key, value in ns.items():
        section, name = key.split(".", 1)
        overrides[section][name] = value
    return mode, overrides


def resolve(mode: str, overrides: dict[str, dict], base: dict | None = None) -> TrainConfig:
    """Defaults <- ``base`` (a stored config's sections, e.g. the model of the checkpoint being fine-tuned) <- CLI overrides."""
    base = base or {}
    sections = {}
    for name, section in SECTIONS.items():
        values = {**base.get(name, {}), **overrides.get(name, {})}
        sections[name] = section_from_dict(section, values)
    return TrainConfig(mode=mode, **sections)
