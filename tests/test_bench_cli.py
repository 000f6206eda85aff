"""``python -m bench``: one entry point for every benchmark, outside the library."""

from __future__ import annotations

import importlib

import pytest

from bench.__main__ import COMMANDS, main


def test_every_command_names_a_module_with_a_main():
    for name, (module, what) in COMMANDS.items():
        assert callable(importlib.import_module(f"bench.{module}").main), name
        assert what


def test_no_argument_lists_the_benchmarks(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_an_unknown_benchmark_is_one_line_and_status_2(capsys):
    assert main(["nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown benchmark 'nope'" in err and "\n" not in err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_benchmark_help_names_its_command(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert f"python -m bench {name}" in capsys.readouterr().out
