"""The command-line syntax every program of the project shares (``train.py``, ``python -m pipeline``, the
benchmarks, ``demo.py``).

* Lists are comma-separated, with no spaces: ``--speeds -8,-4,-2,-1,1,2,4,8``, ``--tgn-groups 4,4,2,1,1``.
  A list that starts with a negative number is taken as the option's value, with or without ``=``
  (plain argparse would take ``-8,-4`` for an unknown option).
* ``--help`` shows every option's default (lists as ``A,B,...``) and keeps descriptions as written.
* A mistake on the command line is one line on stderr, ``PROG: error: WHAT (PROG --help lists the options)``,
  and exit status 2 (argparse's own format first prints the whole usage, dozens of lines for ``train.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Sequence

#: A comma-separated list of integers as one command-line word (optional trailing comma).
INT_LIST = re.compile(r"-?\d+(,-?\d+)*,?")
#: What a list option shows as its value in ``--help``.
LIST_METAVAR = "A,B,..."


def _items(text: str, convert: Callable[[str], object], what: str, example: str) -> tuple:
    words = [w.strip() for w in text.split(",")]
    if words and not words[-1]:
        words.pop()  # "1,2," is "1,2"
    try:
        if not words or not all(words):
            raise ValueError
        return tuple(convert(w) for w in words)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what} such as {example}, got {text!r}") from None


def int_list(text: str) -> tuple[int, ...]:
    """``"-8,-4,4,8"`` -> ``(-8, -4, 4, 8)``: the argparse ``type`` of every integer-list option."""
    return _items(text, int, "integers", "-8,-4,4,8")


def float_list(text: str) -> tuple[float, ...]:
    """``"5,10.5"`` -> ``(5.0, 10.5)``."""
    return _items(text, float, "numbers", "5,10")


def name_list(choices: Iterable[str]) -> Callable[[str], tuple[str, ...]]:
    """The argparse ``type`` of a comma-separated list of names, each one of ``choices``."""
    allowed = tuple(choices)

    def names(text: str) -> tuple[str, ...]:
        items = _items(text, str, "names", ",".join(allowed[:2]))
        wrong = [n for n in items if n not in allowed]
        if wrong:
            raise argparse.ArgumentTypeError(f"unknown {wrong[0]!r}: choose from {', '.join(allowed)}")
        return items

    return names


def show_list(values: Iterable) -> str:
    """``(-8, -4, 4, 8)`` -> ``"-8,-4,4,8"``: how a list is written on the command line (and in ``--help``)."""
    return ",".join(str(v) for v in values)


def join_list_values(args: Sequence[str]) -> list[str]:
    """``["--speeds", "-8,-4"]`` -> ``["--speeds=-8,-4"]``: an integer list after an option is that option's value,
    even when it starts with a minus sign. Words after ``--`` are left alone."""
    out: list[str] = []
    for word in args:
        prev = out[-1] if out else ""
        if ("--" not in out and word.startswith("-") and INT_LIST.fullmatch(word)
                and prev.startswith("-") and prev != "--" and "=" not in prev and not INT_LIST.fullmatch(prev)):
            out[-1] = f"{prev}={word}"
        else:
            out.append(word)
    return out


def flag(field: str) -> str:
    """A config field's command-line option: ``num_clips`` -> ``--num-clips``."""
    return "--" + field.replace("_", "-")


def naming_options(message: str, fields: Iterable[str]) -> str:
    """A config check's ``message``, which names fields (``num_clips must be ...``), prefixed with the options
    of the ``fields`` it names, in order of mention: ``--num-clips, --speeds: num_clips must be ...``."""
    known = set(fields)
    named = dict.fromkeys(w for w in re.findall(r"[a-z][a-z0-9_]*", message) if w in known)
    return f"{', '.join(map(flag, named))}: {message}" if named else message


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (line breaks kept); every option that takes a value shows its default, unless
    its help already says it ("(default ...")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or action.nargs == 0 or default is None or default is argparse.SUPPRESS
                or "(default" in text or "%(default)" in text):
            return text  # positionals, on/off flags, no default, or already said
        shown = show_list(default) if isinstance(default, (list, tuple)) else '""' if default == "" else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".strip()


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the shared syntax (see the module docstring). Subparsers made with
    ``add_subparsers`` are of this class too; ``formatter_class`` defaults to :class:`HelpFormatter`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else args
        return super().parse_known_args(join_list_values(list(args)), namespace)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")
