"""Tasks: construction checks, batches, disjoint splits, losses, natural-language tasks, CLI."""

import json
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sparselens.data import load_tokenizer
from sparselens.errors import UnknownNameError
from sparselens.tasks import TemplateTask, get_task, list_tasks, prompt_split, register_task
from sparselens.tasks.language import ACTIONS, FEMALE, MALE, OPENINGS, VERBS

PYTHON = list_tasks("python")
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tasks(tok):
    return {name: get_task(name, tokenizer=tok) for name in PYTHON}


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def bytes_tok():
    """A byte-level tokenizer with almost no merges: ' as', ']]', ' enumerate' are several tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=260, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    backend.train_from_iterator(["x = 1"], trainer=trainer)
    return _wrap(backend)


@pytest.fixture(scope="module")
def story_tok():
    """A GPT-2-style byte-level BPE trained on a few story sentences (no download)."""
    text = [f"{o} {n} {a}, {m} {v} him. {p} is here when she came, he said to her."
            for o in OPENINGS for n, m in zip(MALE + FEMALE, FEMALE + MALE) for a, v, p in zip(ACTIONS, VERBS, ["he", "she"] * 8)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    backend.train_from_iterator(text, trainer=trainer)
    return _wrap(backend)


# ------------------------------------------------------------------------------- Python tasks
def test_all_twenty_python_tasks_are_registered():
    assert PYTHON == [
        "single_double_quote", "final_kwarg", "set_or_string", "set_or_string_fixedvarname", "class_init", "with_as",
        "bracket_brace", "with_open", "bracket_counting", "for_while", "else_elif", "fstring_brace", "if_ternary",
        "var_swap", "indent_for", "lambda_func", "if_equals", "enumerate_range", "var_if", "while_return_true",
    ]
    assert set(list_tasks()) == set(PYTHON) | {"pronoun", "ioi", "nonsense"}


@pytest.mark.parametrize("name", PYTHON)
def test_batch_layout(name, tasks, tok):
    task = tasks[name]
    n = 6
    batch = task.batch(n=n, split="val", seed=3)
    rows, width = batch.tokens.shape
    assert rows == 2 * n and batch.n_pairs == n and batch.read_pos.shape == batch.correct.shape == (2 * n,)
    assert torch.equal(batch.correct[:n], batch.wrong[n:]) and torch.equal(batch.correct[n:], batch.wrong[:n])
    assert bool((batch.correct != batch.wrong).all())
    assert (batch.tokens[:, 0] == 2047).all()  # every prompt starts like a document, after <|endoftext|>
    for i, prompt in enumerate(batch.prompts):
        end = int(batch.read_pos[i])
        assert tok.decode(batch.tokens[i, 1 : end + 1].tolist()) == prompt
        assert (batch.tokens[i, end + 1 :] == 2047).all()  # right padding with <|endoftext|>
    for i, pair in enumerate(batch.pairs):
        assert pair.prompt_a != pair.prompt_b and pair.target_a != pair.target_b
        assert int(batch.correct[i]) == task.target_ids[pair.target_a]
        assert int(batch.correct[n + i]) == task.target_ids[pair.target_b]
    left = task.batch(n=n, split="val", seed=3, padding_side="left")
    assert (left.read_pos == width - 1).all() and torch.equal(left.correct, batch.correct)
    assert torch.equal(task.batch(n=n, split="val", seed=3).tokens, batch.tokens)  # reproducible
    assert not torch.equal(task.batch(n=n, split="val", seed=4).tokens, batch.tokens)


@pytest.mark.parametrize("name", PYTHON)
def test_splits_are_disjoint_and_varied(name, tasks):
    task = tasks[name]
    seen = {}
    for split in SPLITS:
        prompts = {p for seed in (0, 1) for pair in task.pairs(24, split, seed) for p in (pair.prompt_a, pair.prompt_b)}
        assert all(prompt_split(p) == split for p in prompts)
        assert len(prompts) >= 40, f"{name}/{split}: only {len(prompts)} distinct prompts in 48 pairs"
        seen[split] = prompts
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]


@pytest.mark.parametrize("name", PYTHON)
def test_target_is_the_token_the_tokenizer_produces_in_context(name, tasks, tok):
    task = tasks[name]
    for pair in task.pairs(40, "train", seed=11):
        for prompt, target, suffix in ((pair.prompt_a, pair.target_a, pair.suffix_a), (pair.prompt_b, pair.target_b, pair.suffix_b)):
            head = tok.encode(prompt) + [task.target_ids[target]]
            assert tok.encode(prompt + target + suffix)[: len(head)] == head, (prompt[-40:], target, suffix)
            snippet = prompt + target + suffix
            compile(_complete(snippet), name, "exec")  # the snippet is real Python
            assert "self" not in snippet or "class " in snippet  # no self outside a method


def _complete(src: str) -> str:
    """Close an unfinished trailing block so a snippet compiles."""
    lines = src.rstrip("\n").split("\n")
    last = lines[-1]
    if last.rstrip().endswith(":"):
        lines.append(" " * (len(last) - len(last.lstrip()) + 4) + "pass")
    return "\n".join(lines) + "\n"


def test_single_token_targets_of_the_shipped_tokenizer(tasks):
    fixed = {" as", ":", '"', "'", " in", " ==", " =", "]", "]]", "(", ")", " enumerate", " range", "):", "=", ".",
             " +=", " else", " True", " False", "}", ",", "r", "w", "\n        ", "\n            ", "\n                "}
    used = set().union(*(t.target_ids for t in tasks.values()))
    assert fixed <= used
    assert all(len(t.target_ids) >= 2 for t in tasks.values())


@pytest.mark.parametrize("name", PYTHON)
def test_non_single_token_target_fails_loudly(name, bytes_tok):
    single_char = {"single_double_quote", "bracket_brace", "with_open", "fstring_brace", "lambda_func"}
    if name in single_char:  # every target is one byte: these tasks work even on raw bytes
        task = get_task(name, tokenizer=bytes_tok)
        assert len(task.batch(2).pairs) == 2
        return
    with pytest.raises(ValueError, match=rf"task '{name}'.*single token"):
        get_task(name, tokenizer=bytes_tok)


def test_error_names_the_target_and_its_tokens(bytes_tok):
    with pytest.raises(ValueError, match=r"task 'with_as': target ' as' is 3 tokens \['Ġ', 'a', 's'\]"):
        get_task("with_as", tokenizer=bytes_tok)


# -------------------------------------------------------------------------------------- losses
def _binary(l_t, l_alt):
    return -math.log(math.exp(l_t) / (math.exp(l_t) + math.exp(l_alt)))


def test_losses_against_a_hand_calculation(tasks):
    task = tasks["for_while"]
    batch = task.batch(n=3, split="train", seed=0)
    rows, width = batch.tokens.shape
    logits = torch.randn(rows, width, 2048, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ids = {t: task.target_ids[t] for t in (" in", ":")}
    expected_bin, expected_ce = [], []
    for i, pair in enumerate(batch.pairs):
        la = logits[i, batch.read_pos[i]].tolist()
        lb = logits[3 + i, batch.read_pos[3 + i]].tolist()
        a, b = ids[pair.target_a], ids[pair.target_b]
        expected_bin.append((_binary(la[a], la[b]) + _binary(lb[b], lb[a])) / 2)
        ce = lambda l, t: math.log(sum(math.exp(x) for x in l)) - l[t]  # noqa: E731
        expected_ce.append((ce(la, a) + ce(lb, b)) / 2)
    got = task.loss_from_logits(logits, batch, reduction="none")
    assert got.shape == (3,) and torch.allclose(got, torch.tensor(expected_bin, dtype=got.dtype))
    assert math.isclose(task.loss_from_logits(logits, batch).item(), sum(expected_bin) / 3, rel_tol=1e-9)
    assert math.isclose(task.loss_from_logits(logits, batch, reduction="sum").item(), sum(expected_bin), rel_tol=1e-9)
    ce_got = task.loss_from_logits(logits, batch, kind="ce", reduction="none")
    assert torch.allclose(ce_got, torch.tensor(expected_ce, dtype=ce_got.dtype))
    read = logits[torch.arange(rows), batch.read_pos]  # [row, d_vocab] logits are accepted as they are
    assert torch.allclose(task.loss_from_logits(read, batch, reduction="none"), got)


def test_binary_loss_known_values(tasks):
    task = tasks["for_while"]
    batch = task.batch(n=1)
    logits = torch.zeros(2, 2048)
    logits[0, batch.correct[0]] = 2.0  # A: right by a margin of 2
    logits[1, batch.wrong[1]] = 1.0  # B: wrong by a margin of 1
    per_prompt = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))]
    assert math.isclose(task.loss_from_logits(logits, batch).item(), sum(per_prompt) / 2, rel_tol=1e-6)
    assert task.accuracy_from_logits(logits, batch).item() == 0.5


def test_loss_with_a_model_matches_unpadded_runs(tasks):
    from sparselens import HookedSparseTransformer, SparseTransformerConfig

    torch.manual_seed(0)
    model = HookedSparseTransformer(SparseTransformerConfig(n_layers=1, d_model=32, d_head=16, n_ctx=128))
    task = tasks["enumerate_range"]
    batch = task.batch(n=4, split="test")
    loss = task.loss(model, batch, reduction="none")
    with torch.no_grad():
        logits = torch.stack([model(batch.tokens[i : i + 1, : int(batch.read_pos[i]) + 1])[0, -1] for i in range(8)])
    assert torch.allclose(loss, task.loss_from_logits(logits, batch, reduction="none"), atol=1e-5)


def test_loss_and_batch_hostile_inputs(tasks):
    task = tasks["for_while"]
    batch = task.batch(n=2)
    with pytest.raises(ValueError, match="4 prompts"):
        task.loss_from_logits(torch.zeros(3, 5, 2048), batch)
    with pytest.raises(ValueError, match="unknown loss kind 'kl'"):
        task.loss_from_logits(torch.zeros(4, 2048), batch, kind="kl")
    with pytest.raises(ValueError, match="unknown reduction"):
        task.loss_from_logits(torch.zeros(4, 2048), batch, reduction="avg")
    with pytest.raises(ValueError, match="no split 'tset'; did you mean 'test'"):
        task.batch(2, split="tset")
    with pytest.raises(ValueError, match="padding_side"):
        task.batch(2, padding_side="middle")
    with pytest.raises(UnknownNameError, match="did you mean 'for_while'"):
        get_task("for_whiel")


# ------------------------------------------------------------------------ natural-language tasks
def test_language_tasks_with_a_small_bpe(story_tok):
    pronoun, nonsense, ioi = (get_task(n, tokenizer=story_tok) for n in ("pronoun", "nonsense", "ioi"))
    assert nonsense.default_kind == "ce" and pronoun.default_kind == "binary"
    splits = {}
    for split in SPLITS:
        pairs = pronoun.pairs(60, split)
        for pair in pairs:
            (name_a,), (name_b,) = _names(pair.prompt_a), _names(pair.prompt_b)
            assert name_a in MALE and name_b in FEMALE and pair.prompt_a.replace(name_a, name_b) == pair.prompt_b
            assert (pair.target_a, pair.target_b) == (" he", " she")
        splits[split] = {p for pair in pairs for p in (pair.prompt_a, pair.prompt_b)}
    assert not splits["train"] & splits["val"] and not splits["train"] & splits["test"] and not splits["val"] & splits["test"]
    for pair in nonsense.pairs(5, "val"):
        assert (pair.target_a, pair.target_b) == (" is", " when")
    assert ioi.splits == ("train", "val", "test", "ood")
    for split in ("train", "ood"):
        for pair in ioi.pairs(20, split):
            first, second = (_names(pair.prompt_a), _names(pair.prompt_b))
            assert (pair.target_a, pair.target_b) == (" him", " her")
            assert first[0] in MALE and second[0] in FEMALE  # the target is the first name's pronoun
            same_gender = (first[1] in MALE) == (first[0] in MALE)
            assert same_gender == (split == "ood")
    ood = {p.prompt_a for p in ioi.pairs(50, "ood")}
    assert not ood & {p for s in SPLITS for pair in ioi.pairs(50, s) for p in (pair.prompt_a, pair.prompt_b)}
    batch = ioi.batch(8, split="ood")
    assert batch.tokens.shape[0] == 16 and (batch.tokens[:, 0] == story_tok.eos_token_id).all()


def _names(prompt):
    return [w.rstrip(",") for w in prompt.split() if w.rstrip(",") in MALE + FEMALE]


def test_language_targets_must_be_known_single_tokens(bytes_tok):
    with pytest.raises(ValueError, match=r"task 'pronoun': target ' he' is 3 tokens"):
        get_task("pronoun", tokenizer=bytes_tok)
    words = sorted({w for s in ACTIONS + VERBS + OPENINGS + MALE + FEMALE for w in s.split()} | {","})
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words + ["he", "she", "<unk>", "<|endoftext|>"])}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    word_tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>")
    assert get_task("pronoun", tokenizer=word_tok).batch(4).tokens.shape[0] == 8  # word-level works too
    with pytest.raises(ValueError, match=r"task 'ioi': target ' her' is the unknown token"):
        get_task("ioi", tokenizer=word_tok)


# ------------------------------------------------------------------------------- user templates
def test_template_task_in_a_few_lines(story_tok):
    def make(tokenizer):
        return TemplateTask("he_she_went", ["{opening} {name} went home,", "{opening} {name} came home,"],
                            targets=(" he", " she"), a={"name": MALE}, b={"name": FEMALE},
                            shared={"opening": OPENINGS}, tokenizer=tokenizer)

    register_task("he_she_went", make)
    try:
        task = get_task("he_she_went", tokenizer=story_tok)
        batch = task.batch(3, split="train")
        assert batch.tokens.shape[0] == 6 and "he_she_went" in list_tasks()
        with pytest.raises(ValueError, match="already registered"):
            register_task("he_she_went", make)
    finally:
        from sparselens.tasks import _REGISTRY

        _REGISTRY.pop("he_she_went")
    with pytest.raises(ValueError, match="same slots"):
        TemplateTask("t", ["{x}"], (" he", " she"), a={"x": ["a"]}, b={"y": ["b"]}, tokenizer=story_tok)
    with pytest.raises(ValueError, match="uses a slot with no values"):
        TemplateTask("t", ["{x} {z}"], (" he", " she"), a={"x": ["a"]}, b={"x": ["b"]}, tokenizer=story_tok)
    tiny = TemplateTask("t", ["when {x} came,"], (" he", " she"), a={"x": ["Leo"]}, b={"x": ["Mia"]}, tokenizer=story_tok)
    a, b = "when Leo came,", "when Mia came,"
    empty_split = next(s for s in SPLITS if not prompt_split(a) == s == prompt_split(b))  # its one pair is elsewhere
    with pytest.raises(RuntimeError, match="too few distinct prompts"):
        tiny.pairs(2, split=empty_split)


# ---------------------------------------------------------------------------------------- CLI
def test_tasks_cli_lists_every_task(capsys):
    from sparselens.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in PYTHON:
        assert name in out
    assert '⟨"⟩' in out and "⟨ enumerate⟩" in out and "⟨]]⟩" in out
    assert "not available with this tokenizer: pronoun" in out
    assert main(["tasks", "--task", "with_as"]) == 0
    assert "--- prompt A (target ' as'" in capsys.readouterr().out
    assert main(["tasks", "--task", "nosuch"]) == 1
    assert "unknown task 'nosuch'" in capsys.readouterr().err


def test_evaluate_command_prints_each_models_task_losses(tmp_path, capsys):
    import torch

    from sparselens import HookedSparseTransformer, SparseTransformerConfig
    from sparselens.cli import main
    from sparselens.tasks.evaluate_cli import evaluate

    tok = load_tokenizer()
    model = HookedSparseTransformer(SparseTransformerConfig(n_layers=1, d_model=32, n_ctx=256, seed=0, device="cpu"), tokenizer=tok)
    model.save_pretrained(tmp_path / "m")
    assert main(["evaluate", "--models", str(tmp_path / "m"), "--tasks", "with_as,for_while", "--pairs", "8"]) == 0
    printed = capsys.readouterr().out
    task = get_task("with_as", tokenizer=tok)
    batch = task.batch(n=8, split="test", seed=0)
    with torch.no_grad():
        expected = float(task.loss_from_logits(model(batch.tokens), batch))
    assert f"| with_as | {expected:.3f} (" in printed
    assert evaluate(model, ["with_as"], 8)["with_as"][0] == pytest.approx(expected)
    assert "Tasks solved: " in printed
    assert main(["evaluate", "--models", str(tmp_path / "m"), "--tasks", "with_as", "--pairs", "8", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["models"][str(tmp_path / "m")]["with_as"]
    assert row["loss"] == pytest.approx(expected, abs=1e-6) and row["solved"] == (expected <= 0.1)
    assert main(["evaluate", "--models", str(tmp_path / "nope")]) == 2


def test_ood_splits_of_the_solved_python_tasks_are_longer_and_disjoint():
    """single_double_quote's ood strings join 3-5 phrases (other splits: one phrase, at most 2 words);
    while_return_true's ood loops go on for 2-4 statements after the early return (others: none)."""
    import re

    from sparselens.tasks.python_tasks import WORDS

    def string_words(prompt):  # the words of the string the prompt leaves open
        return prompt.rsplit(prompt[-1] if prompt[-1] in "\"'" else re.findall(r"[\"']", prompt)[-1], 1)[1].split()

    def after_return(prompt):  # loop statements between the early return and the final return
        body = prompt.split("            return ", 1)[1].split("\n")[1:-1]
        return [line for line in body if not re.fullmatch(r"\s+\w+ = \w+\.(parent|next|child)", line)]

    longest = max(len(w.split()) for w in WORDS)
    for name, measure, lo, hi in [("single_double_quote", string_words, longest + 1, 10 * longest),
                                  ("while_return_true", after_return, 2, 4)]:
        task = get_task(name)
        assert task.splits == ("train", "val", "test", "ood")
        ood = task.pairs(40, "ood")
        for pair in ood:
            assert lo <= len(measure(pair.prompt_a)) <= hi, pair.prompt_a
        inside = [p for s in SPLITS for pair in task.pairs(40, s) for p in (pair.prompt_a, pair.prompt_b)]
        for prompt in inside:
            assert len(measure(prompt)) < lo, prompt
        assert not {p for pair in ood for p in (pair.prompt_a, pair.prompt_b)} & set(inside)
