"""The generated Python corpus: valid, varied, deterministic, and free of every task prompt."""

from __future__ import annotations

import ast
import re

import ahocorasick
import pytest

from sparselens.data.corpus import load_documents, strip_python
from sparselens.data.pygen import generate_documents, generate_program, reserved_names
from sparselens.tasks import get_task
from sparselens.tasks.python_tasks import PYTHON_TASKS

DEFINED = re.compile(r"^[ \t]*(?:def|class)[ \t]+(\w+)", re.MULTILINE)


@pytest.fixture(scope="module")
def programs() -> list[str]:
    return generate_documents(4000, seed=0)[1]


@pytest.fixture(scope="module")
def task_prompts() -> dict[str, list[str]]:
    """Prompts of every Python task and split (both prompts of each pair)."""
    out = {}
    for name in PYTHON_TASKS:
        task = get_task(name)
        prompts = []
        for split in task.splits:
            for pair in task.pairs(150, split=split, seed=7):
                prompts += [pair.prompt_a, pair.prompt_b]
        out[name] = prompts
    return out


def test_programs_parse_and_are_deterministic(programs):
    for text in programs[:1000]:
        ast.parse(text)
    assert generate_program(12) == generate_program(12)
    assert generate_program(12) != generate_program(13)
    assert len(set(programs)) == len(programs)


def test_programs_cover_the_constructs_of_python(programs):
    """Both quote styles and the constructs the tasks are about all occur, each in many programs."""
    text = "\n".join(programs)
    needles = {
        "double quotes": '= "', "single quotes": "= '", "f-string": 'f"', "set()": "= set()", ".add(": ".add(",
        "+= on strings": "+= '", "nested list": "[[", "]]": "]]", "dict literal": "{'", "enumerate": "in enumerate(",
        "range": "in range(", "while": "while ", "lambda": "lambda ", "with open": "with open(", "with lock": "lock:",
        "conditional expression": " if ", "elif": "elif ", "else": "else:", "class": "class ", "self.x = x": "self.",
        "swap": ", = ", "keyword default": "=None", "return True": "return True", "return False": "return False",
        "try": "try:", "comprehension": " for ", "str(": "str(", "+ str(": "+ str(", ".items()": ".items():",
    }
    counts = {what: sum(needle in p for p in programs) for what, needle in needles.items() if needle != ", = "}
    swaps = sum(bool(re.search(r"(\w+), (\w+) = \2, \1\b", p)) for p in programs)
    rare = {what: n for what, n in counts.items() if n < 40}
    assert not rare, f"constructs in fewer than 40 of {len(programs)} programs: {rare}"
    assert swaps >= 40, f"only {swaps} programs swap two names"
    assert '"' in text and "'" in text


def test_programs_never_define_a_reserved_name(programs):
    reserved = reserved_names()
    defined = {name for p in programs for name in DEFINED.findall(p)}
    assert defined, "the regex found no definitions: the test is broken"
    assert not defined & reserved, f"the generator defined reserved names: {sorted(defined & reserved)[:10]}"


def test_every_task_prompt_starts_with_a_reserved_definition(task_prompts):
    """Together with the test above: a task prompt cannot occur in any generated corpus."""
    reserved = reserved_names()
    for name, prompts in task_prompts.items():
        for prompt in prompts:
            first = DEFINED.search(prompt)
            assert first is not None, f"{name}: a prompt with no def/class line: {prompt!r}"
            assert first.group(1) in reserved, f"{name}: first definition {first.group(1)!r} is not reserved: {prompt!r}"
            before = prompt[: first.start()]
            assert all(line == "" or line.startswith(("import ", "from ")) for line in before.split("\n")), (
                f"{name}: something other than imports before the first definition: {prompt!r}")


def test_no_task_prompt_occurs_in_the_generated_corpus(programs, task_prompts):
    """Exact substring search of every prompt of every task and split over the whole sample."""
    automaton = ahocorasick.Automaton()
    for name, prompts in task_prompts.items():
        for prompt in prompts:
            automaton.add_word(prompt, (name, prompt))
    automaton.make_automaton()
    hits = [found for text in programs for _, found in automaton.iter(text)]
    assert not hits, f"{len(hits)} task prompts occur in the corpus, e.g. {hits[:3]}"
    # the search itself works: a program with a task prompt pasted in is found
    planted = programs[0] + task_prompts["var_swap"][0]
    assert any(True for _ in automaton.iter(planted))


def test_pygen_source_through_load_documents():
    docs = load_documents("pygen", n_programs=30, pygen_seed=3, progress=False)
    assert docs["id"][0] == "pygen/3/0000000.py"
    assert list(docs["text"]) == generate_documents(30, seed=3)[1]
    mixed = load_documents(["pygen", "pygen"], n_programs=5, progress=False)
    assert mixed["id"][:2] == ["0:pygen/0/0000000.py", "0:pygen/0/0000001.py"] and len(mixed) == 10
    with pytest.raises(ValueError, match="n_programs"):
        load_documents("pygen", n_programs=0)


def test_strip_python_drops_docstrings_and_comments_only():
    src = (
        '"""Module doc."""\n'
        "import os\n"
        "# a comment line\n"
        "def f(x):\n"
        '    """Doc of f,\n'
        '    on two lines."""\n'
        '    return "keep # this"  # trailing comment stays\n'
        "class C:\n"
        "    '''Only a docstring.'''\n"
    )
    out = strip_python(src)
    assert out == (
        "import os\n"
        "def f(x):\n"
        '    return "keep # this"  # trailing comment stays\n'
        "class C:\n"
        "    pass\n"
    )
    ast.parse(out)
    assert strip_python("def broken(:\n") == "def broken(:\n"


def test_a_pygen_corpus_rebuilds_identically_on_a_fresh_machine_and_is_read_from_its_cache(tmp_path, monkeypatch):
    """A run resumed elsewhere (no cache) trains on exactly the same tokens; a cached corpus is not regenerated."""
    import torch

    import sparselens.data.pygen as pygen
    from sparselens.data import load_corpus

    first = load_corpus("pygen", n_ctx=32, n_programs=40, cache_dir=tmp_path / "a", progress=False)
    elsewhere = load_corpus("pygen", n_ctx=32, n_programs=40, cache_dir=tmp_path / "b", progress=False)
    assert torch.equal(first, elsewhere)
    monkeypatch.setattr(pygen, "generate_documents", lambda *a, **k: pytest.fail("regenerated a cached corpus"))
    assert torch.equal(load_corpus("pygen", n_ctx=32, n_programs=40, cache_dir=tmp_path / "a", progress=False), first)
    val = load_corpus("pygen", n_ctx=32, split="val", n_programs=40, cache_dir=tmp_path / "a", progress=False)
    assert val.shape[0] > 0 and not any(torch.equal(v, t) for v in val[:5] for t in first[:200])
