"""What a run leaves behind for people: metrics.jsonl, curves.png, confusion.png, a live progress display, result tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from shardformat import atomic_write

console = Console(log_path=False, width=None if sys.stdout.isatty() else 120)


class MetricsLog:
    """Append-only JSON lines, one record per optimizer step, flushed as written.

    On resume the records past the checkpoint's step are dropped first: they were written by the
    killed process after its last checkpoint and are about to be recomputed.
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [line for line in read_jsonl(self.path) if line.get("step", 0) <= resume_step]
            atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))  # a kill here keeps the old history
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: Accuracies of a per-step record, in display order, with the words that name them: the pretext's two
#: (per-clip signed speed, clip order) and fine-tuning's classification accuracy.
ACCURACIES = {"speed_acc": "speed acc", "order_acc": "order acc", "acc": "acc"}


def accuracy_text(record: dict) -> str:
    """The accuracies a per-step record holds, each named: ``"speed acc 0.312 order acc 0.540"`` or ``"acc 0.250"``."""
    return " ".join(f"{name} {record[key]:.3f}" for key, name in ACCURACIES.items() if key in record)


def progress_display(enabled: bool) -> Progress:
    """Step counter with the latest loss, accuracies (:func:`accuracy_text`), throughput and data-wait share."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[accuracy]}  {task.fields[clips_per_s]:.1f} clips/s  data-wait {task.fields[wait_pct]:.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


#: Lines of each curves.png panel: (title, [(record key, legend label), ...]); a line whose key no record holds is left out.
CURVE_PANELS = (
    ("loss", [("loss", "loss (train)")]),
    ("accuracy", [("speed_acc", "speed, per clip (train)"), ("order_acc", "clip order (train)"), ("acc", "classification (train)")]),
    ("learning rate", [("lr", "lr")]),
    ("data wait (% of step)", [("data_wait_pct", "data wait")]),
)
#: Validation records' lines (validation.jsonl), drawn as points on the panel of the same title.
VALIDATION_LINES = {"loss": [("loss", "clip loss (validation)")], "accuracy": [("video_acc", "video acc (validation)")]}


def curve_lines(records: list[dict], validation: list[dict] = ()) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """What :func:`plot_curves` draws: per panel, its title and its lines as (source, key, label), source being
    ``"train"`` (metrics.jsonl) or ``"validation"``; only keys some record holds."""
    panels = []
    for title, lines in CURVE_PANELS:
        drawn = [("train", key, label) for key, label in lines if any(key in r for r in records)]
        drawn += [("validation", key, label) for key, label in VALIDATION_LINES.get(title, []) if any(key in r for r in validation)]
        panels.append((title, drawn))
    return panels


def plot_curves(records: list[dict], path: str | Path, title: str, validation: list[dict] = ()) -> Path:
    """Loss, accuracies (pretext: per-clip speed and clip order; fine-tuning: classification), learning rate and
    data-wait share against the step, as a PNG; ``validation`` records (validation.jsonl) as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = {"train": records, "validation": list(validation)}
    panels = curve_lines(records, validation)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (label, lines) in zip(axes, panels):
        for source, key, name in lines:
            rows = [r for r in sources[source] if key in r]
            style = {"lw": 1} if source == "train" else {"marker": "o", "ls": "--", "lw": 1}
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name, **style)
        if len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(confusion, classes: list[str], path: str | Path, title: str) -> Path:
    """A confusion matrix ``(C, C)`` (rows: true class, columns: predicted class, counts) as a PNG heat map of
    each row's shares, so that classes with few videos show as clearly as large ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = confusion.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(4 + 0.18 * n, 30)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fontsize = max(3, min(8, 400 / max(n, 1)))
    ax.set_xticks(range(n), classes, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), classes, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's videos")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def results_table(title: str, rows: list[tuple[str, ...]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)
