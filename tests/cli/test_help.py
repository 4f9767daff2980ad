"""`mbtrain <cmd> --help` teaches: a description, an "examples:" section, and the default of
every flag that has one; the output flag has one spelling (`--out/-o`), the old `--output`
still works, unlisted, with a warning."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from mbtrain.cli.main import build_parser, main
from tests.support.launch import REPO

COMMANDS = ("prepare", "train", "submit", "status", "cancel", "eval", "generate", "export", "plot")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_a_description_examples_and_its_defaults(capsys):
    commands = _subparsers(build_parser())
    assert set(commands) == set(COMMANDS)
    for name, parser in commands.items():
        text = _help(name, capsys)
        assert parser.description, name
        assert parser.description.split()[0] in text, name
        assert "\nexamples:\n  mbtrain " in text or "\nexamples:\n  torchrun " in text, name
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)  # every flag and argument says what it is
            if not action.option_strings or action.default in (
                None,
                False,
                "",
                [],
                argparse.SUPPRESS,
            ):
                continue
            # The default as argparse would fill it in, in this flag's own help paragraph.
            flag = action.option_strings[0]
            paragraph = text[text.index(f"\n  {flag}") + 1 :].split("\n  -")[0]
            assert "default" in paragraph, (name, flag, paragraph)
            assert str(action.default) in paragraph or "(default:" in paragraph, (name, flag)


def test_defaults_that_were_invisible_are_shown(capsys):
    prepare = " ".join(_help("prepare", capsys).split())
    assert "--seq-len SEQ_LEN bytes per sample window" in prepare
    assert "(default: 8192, or the --corpus file's)" in prepare
    text = " ".join(_help("eval", capsys).split())
    assert "(default: eval.json)" in text and "(default: 8)" in text and "(default: sliding" in text


def test_one_output_spelling_the_old_one_still_parses(capsys):
    commands = _subparsers(build_parser())
    for name in ("prepare", "eval", "generate", "export", "plot"):
        flags = {s for a in commands[name]._actions for s in a.option_strings}
        assert {"--out", "-o"} <= flags, name
        assert "--output" not in _help(name, capsys), name
    parser = build_parser()
    for name, rest in (
        ("eval", ["m", "d"]),
        ("generate", ["m"]),
        ("export", ["r"]),
        ("plot", ["r"]),
    ):
        args = parser.parse_args([name, *rest, "--output", "x"])
        assert args.out == "x", name
        assert "--output is deprecated, use --out (-o)" in capsys.readouterr().err
        assert parser.parse_args([name, *rest, "-o", "y"]).out == "y"


def test_help_from_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "export", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "examples:\n  mbtrain export runs/my-run --out exported/" in proc.stdout
    assert "--out DIR, -o DIR" in proc.stdout


def test_overrides_may_follow_the_options(capsys):
    """`train RECIPE --dry-run --world-size 8 data.train=...` (as the recipes' headers and the
    README write it): the KEY=VALUE after the options are overrides, in the order typed; an
    unknown option or a stray word is still refused."""
    from mbtrain.cli.main import parse

    parser = build_parser()
    recipe = str(REPO / "recipes" / "tiny_cpu.yaml")
    args = parse(parser, ["train", recipe, "a.b=1", "--dry-run", "--world-size", "8", "c.d=2"])
    assert args.overrides == ["a.b=1", "c.d=2"] and args.dry_run and args.world_size == 8
    for bad in (["--bogus"], ["stray"]):
        with pytest.raises(SystemExit):
            parse(parser, ["train", recipe, "--dry-run", *bad])
        assert "unrecognized arguments" in capsys.readouterr().err
    args = parse(parser, ["status", "runs/a", "--json", "runs/b"])
    assert args.run_dirs == ["runs/a", "runs/b"] and args.json
    with pytest.raises(SystemExit):  # a command without a list takes nothing after options
        parse(parser, ["export", "runs/a", "--out", "x", "runs/b"])
