"""The command line's shared behaviour: help with defaults and examples, --version, close-name suggestions."""

import pytest

from sparselens import __version__
from sparselens.cli import SUBCOMMANDS, command_parser, main


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_command_help_shows_examples_and_defaults(name):
    parser, module = command_parser(name)
    text = parser.format_help()
    assert "examples:" in text
    example_lines = [line.strip() for line in text.split("examples:")[1].splitlines() if line.strip()]
    assert example_lines and all(name in line for line in example_lines), example_lines
    for prog, sub_parser in parsers_within(parser):
        for action in sub_parser._actions:  # every option is explained, and one with a meaningful default says it
            assert action.help, f"{prog} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.nargs != 0:
                shown = sub_parser._get_formatter()._expand_help(action)
                assert "default" in shown.lower(), f"{prog} {action.option_strings[0]} hides its default {action.default!r}"


def parsers_within(parser):
    """``parser`` and, recursively, the parsers of its sub-actions (``bridges train``...), with their prog."""
    import argparse

    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers_within(sub)


def test_examples_parse_with_their_command():
    """Each example line is a valid command line for its parser (options exist, types convert)."""
    import shlex

    for name in SUBCOMMANDS:
        parser, module = command_parser(name)
        for line in module.EXAMPLES.strip().splitlines():
            words = shlex.split(line)
            if words[0] != "sparselens":  # torchrun ... -m sparselens.cli NAME ...
                words = words[words.index("sparselens.cli"):]
            assert words[1] == name, line
            parser.parse_args(words[2:])


def test_prune_help_shows_the_hidden_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 300)", "(default: 0.15)", "(default: results/circuits)"):
        assert shown in text


def test_version_and_plain_top_level_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sparselens {__version__}"
    assert main([]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and "examples:" in text  # no raw RST
    assert all(name in text for name in SUBCOMMANDS)


def test_unknown_commands_options_and_choices_suggest_the_closest(capsys):
    assert main(["prnue"]) == 2
    assert "did you mean 'prune'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["prune", "--model", "m", "--task", "t", "--tagets", "0.1"])
    assert exit_.value.code == 2 and "did you mean '--targets'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "--model", "m", "--task", "t", "--ablation", "mena"])
    assert "did you mean 'mean'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bridges", "trian", "--config", "x.yaml"])
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_default_outputs_are_under_the_ignored_results_folder():
    import pathlib

    ignored = pathlib.Path(__file__).parents[1].joinpath(".gitignore").read_text().split()
    assert "/results/" in ignored
    for name in ("prune", "demo", "compare"):
        parser, _ = command_parser(name)
        (out,) = [a for a in parser._actions if "--out" in a.option_strings]
        assert str(out.default).startswith("results/"), (name, out.default)
