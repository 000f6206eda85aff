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
from pipeline.cli_syntax import LIST_METAVAR, ArgumentParser, flag, int_list, naming_options, show_list
from pipeline.config import ClipConfig
from pipeline.io.remote import RemoteOptions
from pipeline.routing import BACKENDS, GPU_DECODE_THREADS
from training.errors import UsageError
from training.presets import PRESETS, preset_names

MODES = ("pretrain", "finetune", "eval")
ARCHS = tuple(BACKBONES)


def _check(ok: bool, message: str) -> None:
    """A user's mistake (``message`` names the option) is a :class:`UsageError`: one line from ``python train.py``."""
    if not ok:
        raise UsageError(message)


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
    """Samples per step per rank (a pretext sample holds num_clips clips). Not used when global_batch_size is set."""
    global_batch_size: int = 0
    """Samples per step over all ranks; each rank takes global_batch_size / world size. Batches and clip draws then depend on (seed, epoch, this) only, the same on any number of GPUs, and --resume may change the world size (docs/training.md). 0 = batch_size x world size."""
    eval_batch_size: int = 8
    """Videos per eval batch per rank (each holds num_eval_clips clips)."""
    num_workers: int = 2
    """Loader worker processes per rank: reference decoders, or with DALI the processes that cut local streams (and DALI's CPU decoder threads)."""
    gpu_decode_threads: int = GPU_DECODE_THREADS
    """DALI GPU (mixed, NVDEC) decoder threads per rank: videos decoded at once on the GPU (0 = derived from the NVDEC engines the GPU reports, see pipeline/routing.py)."""
    augment: bool = True
    """Random crop and flip while training. Without it, and always in eval and validation: short side resized to resize, then the centre crop_size square (the peers' protocol; training/evaluate.py)."""
    val_fraction: float = 0.1
    """finetune: share of the train split's labelled videos held out for validation (drawn with --seed, by video, rounded up); they are not trained on. 0 = no validation and no best.pt."""
    storage_options: str = ""
    """When --data is a URL (https://, s3://, gs://, ...): fsspec storage options as a JSON object. Stored in config.json and checkpoints, so give credentials through the environment instead."""
    shard_cache: str = ""
    """When --data is a URL: local folder keeping every member read, so later epochs make no requests (empty = no cache)."""
    read_retries: int = RemoteOptions.retries
    """When --data is a URL: retries of a failed read (with backoff) before the sample counts as bad."""
    read_timeout: float = RemoteOptions.timeout_s
    """When --data is a URL: limit on one read, in seconds."""
    skip_bad_samples: bool = False
    """Skip a bad sample (unreadable or truncated bytes, invalid json, wrong frame count) and count it in summary.json / eval.json ("samples"), instead of stopping with an error naming its shard and key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        _check(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        _check(self.global_batch_size >= 0, f"--global-batch-size must be >= 0 (0 = --batch-size x world size), got {self.global_batch_size}")
        _check(self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}")
        _check(self.gpu_decode_threads >= 0, f"--gpu-decode-threads must be >= 0 (0: derived from the GPU), got {self.gpu_decode_threads}")
        _check(self.read_retries >= 0, f"--read-retries must be >= 0, got {self.read_retries}")
        _check(self.read_timeout > 0, f"--read-timeout must be > 0 seconds, got {self.read_timeout}")
        _check(0.0 <= self.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {self.val_fraction}")


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
        _check(self.arch in ARCHS, f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        _check(self.base_width >= 1, f"--base-width must be >= 1, got {self.base_width}")
        _check(self.norm in ("bn", "tgn"), f"--norm must be bn or tgn, got {self.norm!r}")
        _check(len(self.tgn_groups) > 0 and all(g >= 1 for g in self.tgn_groups),
               f"--tgn-groups must be positive integers, got {show_list(self.tgn_groups) or 'none'}")
        _check(self.head in ("sort", "speed", "both"), f"--head must be sort, speed or both, got {self.head!r}")
        _check(self.hidden >= 1, f"--hidden must be >= 1, got {self.hidden}")
        _check(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")


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
        _check(self.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {self.optimizer!r}")
        _check(self.lr > 0 and math.isfinite(self.lr), f"--lr must be positive, got {self.lr}")
        _check(0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}")
        _check(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        _check(self.max_steps >= 0, f"--max-steps must be >= 0, got {self.max_steps}")


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go, what to start from, and how the loop runs."""

    out: str = "runs/default"
    """Run folder: config.json, metrics.jsonl, checkpoint.pt, curves.png, summary.json (finetune with validation: best.pt, validation.jsonl; eval: eval.json, confusion.json, confusion.png)."""
    init: str = "scratch"
    """finetune: a checkpoint to take the backbone from (pretrain, or finetune of another dataset: its classifier is dropped), or `scratch`. eval: the checkpoint to evaluate (best.pt or checkpoint.pt of a finetune run; a pretrain checkpoint gives pretext accuracy and retrieval only), or `scratch` for a random-init baseline."""
    resume: bool = False
    """Continue the run in --out from its checkpoint.pt: same step, same data order, same RNG streams (on another world size: same global batches, see docs/training.md)."""
    auto_resume: bool = False
    """Resume from --out's checkpoint.pt when it exists, else start the run: the one command a restarting launcher (torchrun --max-restarts, SLURM --requeue, a Kubernetes Job) runs every time."""
    seed: int = 0
    """Seeds model init, dropout, the loader's sampling and the draw of the validation videos."""
    ckpt_every: int = 0
    """Write checkpoint.pt every this many steps (0 = at the end of each epoch only); always at the end."""
    val_every: int = 5
    """finetune with val_fraction > 0: validate every this many epochs and after the last step (0 = after the last step only); the best so far is kept as best.pt."""
    stop_after: int = 0
    """Leave the loop after this many steps of this process, as a pre-emption would (0 = never). For resume drills."""
    log_samples: bool = False
    """Rank 0 appends one JSON line per step to OUT/samples.jsonl: the global batch's sample keys and clip draws (starts, speeds, crops), continued across resumes."""
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
        _check(bool(self.out), "--out must be a folder, got ''")
        _check(bool(self.init), "--init must be a checkpoint path or `scratch`, got ''")
        _check(self.ckpt_every >= 0, f"--ckpt-every must be >= 0, got {self.ckpt_every}")
        _check(self.stop_after >= 0, f"--stop-after must be >= 0, got {self.stop_after}")
        _check(self.val_every >= 0, f"--val-every must be >= 0, got {self.val_every}")
        _check(self.log_every >= 1, f"--log-every must be >= 1, got {self.log_every}")
        _check(self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}")


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
        _check(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        _check(bool(self.data.data), "--data (a folder written by `preprocess`) is required")
        _check(self.mode != "pretrain" or self.run.init == "scratch",
               f"--init is for finetune and eval, got --init {self.run.init} for pretrain (--resume continues a pretraining run)")
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
    """Build one section from plain values, turning lists back into the tuples the fields declare. A value
    refused by a check inherited from outside this module (pipeline.ClipConfig's, whose messages use field
    names) is a :class:`UsageError` that starts with the options it names: ``--num-clips, --speeds: ...``."""
    hints = typing.get_type_hints(section)
    known = {f.name for f in dataclasses.fields(section)}
    unknown = set(values) - known
    _check(not unknown, f"unknown {section.__name__} fields: {sorted(unknown)}")
    try:
        return section(**{k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in values.items()})
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(naming_options(str(err), known)) from None


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


def build_parser() -> argparse.ArgumentParser:
    """``train.py {pretrain,finetune,eval} [--option value ...]``; every dataclass field is one option."""
    parser = ArgumentParser(
        prog="train.py",
        description="Self-supervised pretraining by playback-speed prediction, action-recognition fine-tuning, and evaluation. "
        "Run under `torchrun --nproc_per_node N` for DDP. A mistake (an option, a file, the data) is one line and exit status 2.",
    )
    commands = parser.add_subparsers(dest="mode", required=True, metavar="{pretrain,finetune,eval}")
    about = {
        "pretrain": "Speed-prediction pretext task on (unlabelled) shards: sorting permutation and/or per-clip speed loss.",
        "finetune": "Action classification on labelled shards, from a pretrain checkpoint (--init PATH) or from scratch.",
        "eval": "Clip and video top-1/top-5, per-class accuracy and confusion matrix on --test-split, and nearest-neighbour "
        "retrieval (test queries, train gallery), written to OUT/eval.json (confusion.json, confusion.png). Clips: short side "
        "resized to --resize, centre --crop-size crop, --num-eval-clips per video. Model settings come from the --init checkpoint.",
    }
    for mode in MODES:
        sub = commands.add_parser(mode, help=about[mode], description=about[mode])
        sub.add_argument("--preset", choices=preset_names(mode), default=argparse.SUPPRESS,
                         help="start from a named protocol (options given on the command line still win): "
                         + "; ".join(f"{name}: {PRESETS[mode, name].about}" for name in preset_names(mode)) + " (docs/reproduce.md)")
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the traceback of a user's mistake too (by default it is one line, `train.py: error: ...`, exit status 2)")
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
                    kwargs.update(type=int_list, metavar=LIST_METAVAR)
                else:
                    kwargs.update(type=kind, metavar=f.name.upper())
                group.add_argument(flag(f.name), **kwargs)
    return parser


def _show(value) -> str:
    return show_list(value) if isinstance(value, tuple) else str(value)


def parse_overrides(argv: list[str] | None) -> tuple[str, dict[str, dict]]:
    """The mode and only the options given on the command line: ``{"optim": {"lr": 0.1}, ...}``, plus
    ``"preset": NAME`` when ``--preset`` is given (train.py layers it under the command line) and
    ``"debug": True`` with ``--debug``."""
    ns = vars(build_parser().parse_args(argv))
    mode = ns.pop("mode")
    overrides: dict = {name: {} for name in SECTIONS}
    for key in ("preset", "debug"):
        if key in ns:
            overrides[key] = ns.pop(key)
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
