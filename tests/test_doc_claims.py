"""What the documents claim about the code is what the code does.

* Every command the Markdown files show (fenced blocks and inline code) for one of the project's programs
  (``train.py``, ``preprocess``, ``python -m pipeline``, ``python -m bench NAME``, ``demo.py``,
  ``python -m training.presets``, ``tests/soak_loader.py``) parses with that program's real argument parser:
  the program's ``main`` runs up to its ``parse_args`` call, which returns and stops it there.
* Every default a document quotes for a configuration field or option (``base_width`` (default 64), the
  design document's table of open choices) is the default the dataclasses and parsers hold.

Both scanners must find a minimum number of claims, so a regex that silently matches nothing fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
#: Words that stand for "more of the same" or for a choice in a synopsis: dropped before parsing.
SYNOPSIS = {"...", "[...]", "…"}


class Parsed(Exception):
    """Raised by the patched ``parse_args`` once parsing succeeded: the program stops before doing anything."""


def programs() -> dict[str, object]:
    """Program name -> its ``main(argv)``."""
    import demo
    import train
    from bench.__main__ import main as bench_main
    from pipeline.cli import main as pipeline_main
    from preprocess.cli import main as preprocess_main
    from training.presets import main as presets_main

    soak = importlib.import_module("soak_loader")
    return {"train.py": train.main, "preprocess": preprocess_main, "pipeline": pipeline_main, "bench": bench_main,
            "demo.py": demo.main, "training.presets": presets_main, "tests/soak_loader.py": soak.main}


def program_and_args(words: list[str]) -> tuple[str, list[str]] | None:
    """(program, argv) of a command line, or None when it runs none of the project's programs."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # OMP_NUM_THREADS=1 ...
        words = words[1:]
    if words[:1] == ["torchrun"]:
        words = words[next((i for i, w in enumerate(words) if w == "train.py"), len(words)):]
        return ("train.py", words[1:]) if words else None
    if words[:1] == ["python"] or words[:1] == ["python3"]:
        words = words[1:]
        if words[:1] == ["-m"] and len(words) > 1:
            module = words[1]
            if module in ("pipeline", "bench", "training.presets", "preprocess"):
                return module, words[2:]
            return None
        if words[:1] and words[0] in ("train.py", "demo.py", "tests/soak_loader.py"):
            return words[0], words[1:]
        return None
    if words[:1] == ["preprocess"]:
        return "preprocess", words[1:]
    return None


def commands(text: str) -> list[list[str]]:
    """Command lines of a Markdown text: fenced lines (continuations joined, comments cut) and inline code."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    lines += INLINE.findall(FENCE.sub("", text))
    out = []
    for line in lines:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if any(w.startswith("[--") or w in ("|", ">", "&&") or "|" in w and w.startswith("{") for w in words):
            continue  # a synopsis with optional parts or a pipeline: not one command
        words = [w for w in words if w not in SYNOPSIS]
        if words:
            out.append(words)
    return out


PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_/]*|.*\$.*")


def is_synopsis(argv: list[str]) -> bool:
    """A usage pattern rather than a command: no arguments, ``ARGS``, ``{a,b}`` choices, or an option whose value is
    a placeholder (``--dataset NAME``, ``--workers $(nproc)``); placeholders as positional paths are fine."""
    if not argv or "ARGS" in argv or any(a.startswith("{") or "|" in a for a in argv):
        return True
    if len(argv) == 1 and argv[0].startswith("--") and argv[0] != "--help":
        return True  # an option named in the text (`preprocess --dataset`), not a command
    return any(prev.startswith("--") and "=" not in prev and PLACEHOLDER.fullmatch(word) for prev, word in zip(argv, argv[1:]))


def documented_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for md in DOCS:
        for words in commands(md.read_text(encoding="utf-8")):
            hit = program_and_args(words)
            if hit is not None and not is_synopsis(hit[1]):
                found.append((md.relative_to(REPO).as_posix(), *hit))
    return found


def test_the_command_scanner_finds_commands_and_skips_the_rest():
    text = "```bash\npython train.py pretrain --data d \\\n  --out o   # note\nls -la\n```\nrun `python -m bench loader OUT` or `make test`"
    assert [program_and_args(w) for w in commands(text)] == [("train.py", ["pretrain", "--data", "d", "--out", "o"]), None,
                                                              ("bench", ["loader", "OUT"]), None]
    assert program_and_args(["torchrun", "--nproc_per_node", "8", "train.py", "eval"]) == ("train.py", ["eval"])
    assert program_and_args(["OMP_NUM_THREADS=1", "python", "demo.py", "--seeds", "2"]) == ("demo.py", ["--seeds", "2"])
    assert is_synopsis([]) and is_synopsis(["--dataset", "NAME", "ROOT", "OUT"]) and is_synopsis(["{pretrain,finetune,eval}", "--help"])
    assert not is_synopsis(["--dataset", "ucf101", "ROOT", "OUT"]) and not is_synopsis(["pretrain", "--data=$DATA"])


def _parse(main, argv: list[str], monkeypatch) -> argparse.Namespace | None:
    """Run ``main(argv)`` until its parser has parsed ``argv``; the Namespace, or None if it never parsed."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        main(argv)
    except Parsed as parsed:
        return parsed.args[0]
    return None


def test_a_wrong_option_is_caught(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _parse(programs()["train.py"], ["pretrain", "--no-such-option", "1"], monkeypatch)
    assert _parse(programs()["train.py"], ["pretrain", "--lr", "0.1"], monkeypatch) is not None


def test_every_documented_command_parses(monkeypatch, capsys):
    mains = programs()
    found = documented_commands()
    assert len(found) >= 40, f"only {len(found)} commands found: the scanner is broken"
    assert {program for _, program, _ in found} >= {"train.py", "preprocess", "pipeline", "bench", "demo.py"}
    failures = []
    for where, program, argv in found:
        argv = [re.sub(r"\$\{?[A-Z_]+\}?", "x", a) for a in argv]  # shell variables stand for paths
        try:
            if _parse(mains[program], argv, monkeypatch) is None:
                failures.append(f"{where}: `{program} {shlex.join(argv)}` never reached its parser")
        except SystemExit as e:
            if e.code == 0:  # --help
                continue
            failures.append(f"{where}: `{program} {shlex.join(argv)}` does not parse (exit {e.code}): "
                            f"{capsys.readouterr().err.strip().splitlines()[-1:]}")
    assert not failures, "\n".join(failures)


# ---- defaults quoted in documents ----------------------------------------------------------------------------

def config_defaults() -> dict[str, object]:
    """Field name -> default of every configuration dataclass a user meets (loader and train.py)."""
    from pipeline.config import LoaderConfig
    from training.config import SECTIONS

    defaults = {}
    for cls in (LoaderConfig, *SECTIONS.values()):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
    return defaults


def _same(quoted: str, default) -> bool:
    quoted = quoted.strip("`")
    if isinstance(default, (tuple, list)):
        return [s.strip() for s in re.split(r"[,\s]+", quoted.strip("()")) if s.strip()] == [str(v) for v in default]
    if isinstance(default, bool):
        return quoted.lower() == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return float(quoted) == float(default)
        except ValueError:
            return False
    return quoted.strip("\"'") == str(default)


#: ``field`` (default VALUE) or ``field``, default VALUE, or ``field="VALUE"`` (default)
FIELD_DEFAULT = re.compile(r"`(?P<name>[a-z][a-z0-9_]*)`[^`\n.;]{0,40}?\bdefault (?P<value>`[^`]+`|[\w.\-]+)"
                           r"|`(?P<name2>[a-z][a-z0-9_]*)=(?P<value2>[^`]+)` \(default\)")


def quoted_field_defaults() -> list[tuple[str, str, str]]:
    fields = config_defaults()
    found = []
    for md in DOCS:
        for m in FIELD_DEFAULT.finditer(md.read_text(encoding="utf-8")):
            name, value = (m["name"], m["value"]) if m["name"] else (m["name2"], m["value2"])
            if name in fields:
                found.append((md.relative_to(REPO).as_posix(), name, value))
    return found


def test_the_default_scanner_reads_both_forms():
    assert [(m["name"] or m["name2"], m["value"] or m["value2"]) for m in FIELD_DEFAULT.finditer(
        "`base_width` (default 64) and `eval_view=\"center\"` (default), `tgn_groups`, default `(4, 4, 2, 1, 1)`")] == [
        ("base_width", "64"), ("eval_view", '"center"'), ("tgn_groups", "`(4, 4, 2, 1, 1)`")]
    assert _same("`(4, 4, 2, 1, 1)`", (4, 4, 2, 1, 1)) and _same("12", 12) and not _same("13", 12) and _same('"full"', "full")


def test_every_quoted_field_default_is_the_dataclass_default():
    fields = config_defaults()
    found = quoted_field_defaults()
    assert len(found) >= 3, f"only {found}: the scanner is broken"
    wrong = [f"{where}: `{name}` default {value}, the code's is {fields[name]!r}" for where, name, value in found
             if not _same(value, fields[name])]
    assert not wrong, "\n".join(wrong)


def test_the_design_table_of_open_choices_holds_train_py_defaults():
    """docs/design.md §4 lists each open choice with its option and default: the configuration's default
    (``--tgn-groups`` is the field ``tgn_groups``)."""
    fields = config_defaults()
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [^|]+ \| `(--[a-z-]+)[^`]*` \| `?([^|`(]+?)`?(?: \([^|]*\))? \|$", text, flags=re.M)
    assert len(rows) >= 5, rows
    for option, quoted in rows:
        default = fields[option[2:].replace("-", "_")]
        assert _same(quoted.split(" ")[0], default), (option, quoted, default)  # "both (sum of the two)" -> "both"


def test_the_ablation_gains_are_those_of_their_result_files():
    """docs/ablations.md's summary table quotes each comparison's video-accuracy gain, interval, seeds won and the
    verdict the rule gives; they are those of the committed result files (docs/ablations/NAME.json)."""
    import json

    from training.stats import outcome

    text = (REPO / "docs" / "ablations.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    found = 0
    for path in sorted((REPO / "docs" / "ablations").glob("*.json")):
        assert f"(ablations/{path.name})" in text, f"docs/ablations.md does not link {path.name}"
        for c in json.loads(path.read_text())["comparisons"]:
            if c["metric"] != "video_acc":
                continue
            low, high = c["ci95"]
            quoted = f"{c['mean_gain']:+.3f} [{low:+.3f}, {high:+.3f}], {c['wins']}/{c['seeds']}".replace("-", "\N{MINUS SIGN}")
            row = [line for line in rows if quoted in line]
            assert row, f"{path.name}: {c['b']} vs {c['a']}: {quoted} is not in the table"
            assert f"| {outcome(c)} |" in row[0], f"{path.name}: {c['b']} vs {c['a']}: the verdict is {outcome(c)}"
            found += 1
    assert found >= 6, "the four ablations make at least six video-accuracy comparisons"
