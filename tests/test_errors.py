"""Bad input gets a clear error: one handler for every command, suggestions for cached names and
names_filter typos, reporting losses without a graph, and the notes docstrings cite are in docs/."""

import re
from pathlib import Path

import pytest

from sparselens.cli import main
from sparselens.errors import CheckpointError, InputError, SparselensError, UnknownNameError

ROOT = Path(__file__).parents[1]


def test_every_command_reports_bad_input_in_one_line(capsys):
    assert main(["evaluate", "--models", "sparse-pygen-2l-128", "--tasks", "with_as,elsee_elif"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "sparselens evaluate: unknown task 'elsee_elif'; did you mean 'else_elif'?"
    assert main(["prune", "--model", "no/such/model", "--task", "with_as"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert issubclass(UnknownNameError, SparselensError) and issubclass(CheckpointError, SparselensError)
    assert issubclass(InputError, ValueError)


def test_cache_and_names_filter_typos_are_named(tiny_model, tokens):
    _, cache = tiny_model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"])
    with pytest.raises(KeyError, match="did not cache.*did you mean 'blocks.0.hook_resid_post'"):
        cache["blocks.0.hook_resid_pre"]
    _, cache = tiny_model.run_with_cache(tokens)
    with pytest.raises(KeyError, match="unknown cached activation 'blocks.0.hook_resid_psot'; did you mean 'blocks.0.hook_resid_post'"):
        cache["blocks.0.hook_resid_psot"]
    assert cache["resid_post", 0].shape == (3, 12, 64)  # TransformerLens shorthands still work
    with pytest.raises(KeyError, match="names_filter 'blocks.1.attn.hook_patern'; did you mean 'blocks.1.attn.hook_pattern'"):
        tiny_model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_patern")


def test_reported_task_losses_carry_no_graph(trained_on_quotes):
    model, task, _ = trained_on_quotes
    batch = task.batch(n=4, split="val")
    assert not task.loss(model, batch).requires_grad
    assert task.loss(model, batch, grad=True).requires_grad


def test_the_notes_docstrings_cite_are_in_the_repository():
    cited = set()
    for path in (ROOT / "sparselens").rglob("*.py"):
        cited |= set(re.findall(r"\b(METHOD\.md|DESIGN\.md)\b", path.read_text()))
    assert cited and all((ROOT / "docs" / name).exists() for name in cited)
