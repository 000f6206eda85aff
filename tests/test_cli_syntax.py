"""The command-line syntax every program shares (pipeline/cli_syntax.py): comma-separated lists (a leading
negative number is a value, not an option, with or without ``=``), defaults in every ``--help``, one-line errors."""

from __future__ import annotations

import argparse
import re

import pytest

from pipeline.cli_syntax import int_list, join_list_values, name_list, naming_options, show_list
from pipeline.config import DEFAULT_SPEEDS


def test_int_list_reads_comma_separated_integers():
    assert int_list("-8,-4,-2,-1,1,2,4,8") == (-8, -4, -2, -1, 1, 2, 4, 8)
    assert int_list("4") == (4,) and int_list("1,2,") == (1, 2) and int_list(" 1, 2") == (1, 2)
    for bad in ("", ",", "1,,2", "1 2", "a,b", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="comma-separated integers"):
            int_list(bad)
    assert show_list((-8, 4)) == "-8,4" and int_list(show_list(DEFAULT_SPEEDS)) == DEFAULT_SPEEDS


def test_name_list_checks_each_name():
    names = name_list(["c3d", "r3d_18"])
    assert names("r3d_18,c3d") == ("r3d_18", "c3d")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown 'x'"):
        names("c3d,x")


def test_a_list_after_an_option_becomes_its_value():
    assert join_list_values(["--speeds", "-8,-4", "--num-clips", "2"]) == ["--speeds=-8,-4", "--num-clips", "2"]
    assert join_list_values(["--seed", "-3"]) == ["--seed=-3"]
    for args in (["--speeds=-8,-4"], ["--speeds", "1,2"], ["--lr", "-0.5"], ["-8,-4"], ["x", "-8,-4"], ["--", "--speeds", "-1,1"]):
        assert join_list_values(args) == args
    assert join_list_values(["--a", "-1", "-2,3"]) == ["--a=-1", "-2,3"]  # "-1" is a value, not an option taking "-2,3"


def test_train_py_takes_lists_with_and_without_equals():
    from training.config import parse_overrides

    for argv in (["--speeds", "-8,-4,-2,-1,1,2,4,8"], ["--speeds=-8,-4,-2,-1,1,2,4,8"]):
        _, over = parse_overrides(["pretrain", *argv, "--num-clips", "2", "--tgn-groups", "4,4,2,1,1"])
        assert over["data"] == {"speeds": (-8, -4, -2, -1, 1, 2, 4, 8), "num_clips": 2} and over["model"] == {"tgn_groups": (4, 4, 2, 1, 1)}
    _, over = parse_overrides(["finetune", "--speeds", "-2", "--seed", "-1"])
    assert over["data"] == {"speeds": (-2,)} and over["run"] == {"seed": -1}


def test_pipeline_preview_takes_the_same_lists():
    from pipeline.cli import build_parser

    args = build_parser().parse_args(["preview", "OUT", "--speeds", "-8,-4,4,8", "--num-clips", "2", "--out", "d"])
    assert args.speeds == (-8, -4, 4, 8) and args.num_clips == 2 and args.shards == ["OUT"]
    assert build_parser().parse_args(["preview", "OUT", "--out", "d"]).speeds == DEFAULT_SPEEDS


def test_a_command_line_mistake_is_one_line_and_status_2(capsys):
    from pipeline.cli import build_parser, main

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["preview", "OUT", "--speeds", "-8 -4", "--out", "d"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m pipeline preview: error: argument --speeds: expected comma-separated")
    with pytest.raises(SystemExit) as stop:  # a value the loader config refuses: named by its option
        main(["preview", "OUT", "--num-frames", "0", "--out", "d"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("python -m pipeline: error: --num-frames: num_frames must be >= 1, got 0")


def test_naming_options_prefixes_the_options_a_message_names():
    fields = {"num_clips", "speeds", "crop_size", "resize"}
    assert naming_options("num_clips must be in [1, min(len(speeds)=2, 6)]", fields) == \
        "--num-clips, --speeds: num_clips must be in [1, min(len(speeds)=2, 6)]"
    assert naming_options("something else", fields) == "something else"


# ---------------------------------------------------------------- defaults in every --help


def _parser(main, argv: list[str], monkeypatch) -> argparse.ArgumentParser:
    """The parser ``main(argv)`` builds, caught when it parses."""

    class Caught(Exception):
        pass

    def catch(self, args=None, namespace=None):
        raise Caught(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(Caught) as caught:
        main(argv)
    monkeypatch.undo()
    return caught.value.args[0]


def _help_entries(text: str) -> dict[str, str]:
    """Option string -> its help text as ``--help`` prints it (wrapped lines joined)."""
    entries: dict[str, str] = {}
    options: list[str] = []  # of the entry being read
    for line in text.splitlines():
        start = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if start:
            options = re.findall(r"(?:^|, )(-[\w-]+)", start[1])
            entries.update({option: start[2] or "" for option in options})
        elif options and line.startswith(" " * 8) and line.strip():
            entries.update({option: f"{entries[option]} {line.strip()}".strip() for option in options})
        else:
            options = []
    return entries


def _programs() -> dict:
    """Program -> a function of ``monkeypatch`` giving its parser."""
    import demo
    from bench.__main__ import COMMANDS
    from bench.__main__ import main as bench_main
    from pipeline.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    programs = {"python -m pipeline preview": lambda mp: subcommands.choices["preview"],
                "demo.py": lambda mp: _parser(demo.parse_args, [], mp)}
    for name in COMMANDS:
        programs[f"python -m bench {name}"] = lambda mp, name=name: _parser(bench_main, [name], mp)
    return programs


@pytest.mark.parametrize("program", list(_programs()))
def test_every_help_shows_the_defaults(program, monkeypatch):
    parser = _programs()[program](monkeypatch)
    entries = _help_entries(parser.format_help())
    with_default = [a for a in parser._actions if a.option_strings and a.nargs != 0 and a.default not in (None, argparse.SUPPRESS)]
    assert with_default, program
    for action in with_default:
        help_text = entries[action.option_strings[-1]]
        assert "(default" in help_text, (program, action.option_strings, help_text)
        if isinstance(action.default, (list, tuple)):
            assert f"(default: {show_list(action.default)})" in help_text


def test_a_list_default_is_shown_as_it_is_typed():
    from pipeline.cli import build_parser

    preview = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["preview"]
    assert "(default: -8,-4,-2,-1,1,2,4,8)" in _help_entries(preview.format_help())["--speeds"]
