"""``KEY=V1,V2[,V3]``: one configuration field of train.py and the values a comparison gives it (demo.py --vary).

KEY is ``SECTION.FIELD`` of :class:`training.config.TrainConfig` (``model.head``, ``data.num_clips``, ...).
Values are separated by commas; a field that holds a list (``data.speeds``) takes lists, separated by
semicolons: ``data.speeds=1,2,4,8;-8,-4,-2,-1,1,2,4,8``. Each value is converted to the field's type and
checked by the field's own section (its ``__post_init__``), so a bad value is refused before any run starts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from pipeline.cli_syntax import flag as _flag
from pipeline.cli_syntax import int_list as _int_tuple
from training.config import SECTIONS

#: Fields the comparison itself sets for every arm, with what to use instead.
RESERVED = {
    "data.data": "the demo builds its own data",
    "data.train_split": "the demo trains on its train split",
    "data.test_split": "the demo scores the val split while tuning and the test split once per arm",
    "optim.lr": "the fine-tuning rate is chosen per arm on the val split (demo.py --lr-grid)",
    "run.out": "the demo names every run's folder under --out",
    "run.init": "the demo pretrains each arm and fine-tunes from it",
    "run.resume": "the demo resumes by itself (rerun the same command)",
    "run.seed": "every arm runs the same seeds (demo.py --seeds and --first-seed)",
    "run.stop_after": "every arm gets the same budget",
}


@dataclass(frozen=True)
class Variation:
    """A parsed ``--vary``: the field and its values, in the given order (the first is the baseline)."""

    key: str
    """``SECTION.FIELD``, e.g. ``model.head``."""
    texts: tuple[str, ...]
    """The values as written (they name the arms)."""
    values: tuple
    """The values converted to the field's type."""

    def __post_init__(self) -> None:
        if len(self.values) != len(self.texts):
            raise ValueError(f"{self.key}: {len(self.texts)} texts for {len(self.values)} values")

    def train_args(self, index: int) -> list[str]:
        """The train.py options that give the field its ``index``-th value (``--flag=value``: negative numbers parse)."""
        name = self.key.split(".", 1)[1]
        value = self.values[index]
        if isinstance(value, bool):
            return [_flag(name) if value else "--no-" + _flag(name)[2:]]
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        return [f"{_flag(name)}={text}"]


def _convert(kind, text: str):
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    try:
        return _int_tuple(text) if typing.get_origin(kind) is tuple else kind(text)
    except ValueError:
        raise ValueError(f"expected {'integers' if typing.get_origin(kind) is tuple else 'an integer' if kind is int else 'a number' if kind is float else kind.__name__}, got {text!r}") from None


def parse_vary(text: str) -> Variation:
    """``KEY=V1,V2[,V3]`` -> :class:`Variation`; a ``ValueError`` with one line saying what to write instead."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not rest.strip():
        raise ValueError(f"--vary {text!r}: expected KEY=V1,V2 (e.g. model.head=sort,speed,both)")
    section_name, dot, name = key.partition(".")
    section = SECTIONS.get(section_name)
    if section is None or not dot:
        raise ValueError(f"--vary {key}: unknown key; KEY is SECTION.FIELD with SECTION one of {', '.join(SECTIONS)} (e.g. model.norm)")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields:
        raise ValueError(f"--vary {key}: {section_name} has no field {name!r} (`python train.py pretrain --help` lists them)")
    if key in RESERVED:
        raise ValueError(f"--vary {key}: not a field to vary here: {RESERVED[key]}")
    kind = typing.get_type_hints(section)[name]
    is_list = typing.get_origin(kind) is tuple
    if is_list and ";" not in rest:
        raise ValueError(f"--vary {key}: the field holds a list, so separate its values with ';' (e.g. {key}=1,2;-2,-1,1,2)")
    texts = tuple(t.strip() for t in rest.split(";" if is_list or ";" in rest else ","))
    values = []
    for t in texts:
        try:
            value = _convert(kind, t)
        except ValueError as e:
            raise ValueError(f"--vary {key}: bad value {t!r}: {e}") from None
        values.append(value)
    if len(values) < 2:
        raise ValueError(f"--vary {key}: give at least two values to compare, got {len(values)}")
    if len(set(values)) != len(values):
        raise ValueError(f"--vary {key}: a value is given twice ({', '.join(texts)})")
    return Variation(key=key, texts=texts, values=tuple(values))
