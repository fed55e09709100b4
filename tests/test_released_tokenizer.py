"""The released models' own tokenizer (tinypython_2k): built from encoder.json + vocab.bpe, identical
to the released tiktoken encoding, attached to released models, and checked against cfg.tokenizer_name."""

import json
import re

import data_gym
import nanogpt_reference as ref
import pytest
import torch

from sparselens import HookedSparseTransformer
from sparselens.data import load_tokenizer
from sparselens.data.tokenizer_io import NAME_KEY, SHIPPED_TOKENIZER_NAME, tokenizer_name
from sparselens.errors import CheckpointError
from sparselens.pretrained.released import TINYPYTHON_EOT_ID, TINYPYTHON_PATTERN, build_released_tokenizer
from sparselens.tasks import get_task

# Not trained on (data_gym.TRAIN_MODULES are): regexes, unicode tables, tabs in strings, long docstrings.
CORPUS_MODULES = ["tokenize.py", "difflib.py", "calendar.py", "email/_header_value_parser.py", "encodings/cp1252.py",
                  "fractions.py", "html/entities.py", "locale.py", "ftplib.py", "inspect.py"]
NESTED = "".join(" " * (4 * d) + f"if x{d}:\n" for d in range(14)) + " " * 56 + "return 1\n"
EDGE_CASES = {
    "tabs": "def f(a):\n\tif a:\n\t\treturn a\t# tab\n\telse:\n\t\t\tpass\n",
    "blank_lines_with_blanks": "x = 1   \n\n    \n\t\n\n\ny = 2\n\n\n",
    "deep_indentation": NESTED,
    "crlf": "class A:\r\n    def f(self):\r\n        return 1\r\n\r\n\r\n",
    "unicode": "π = 3.14  # ünïcödé, 日本語, emoji 😀👍🏽, z̷a̷l̷g̷o̷\nnaïve = 'café'\nΔx = π * 2\n",
    "unicode_whitespace": "a\u00a0b\u2003c\u3000d\u2028e\u2029f\x85g\x0bh\x0ci\n",
    "numbers": "n = 1234567 + 3.14159 - 1e-10 * 0x1F + ١٢٣ + ½\n",
    "slashes_and_quotes": "a//b /\n/\n\\\n'''doc'''\n\"\"\"x\"\"\"\nr'\\n'\n",
    "end_of_text_inside": "a = 1\n<|endoftext|>def g():\n    pass\n",
    "control_bytes": "\x00\x01\x1b[0m\x7f\n",
}


@pytest.fixture(autouse=True)
def no_tiktoken_cache(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken caches files by path otherwise


@pytest.fixture(scope="module")
def gym(tmp_path_factory):
    """A 2048-token BPE (<|endoftext|> = 2047, as in the release) in data-gym format."""
    return data_gym.write_data_gym(tmp_path_factory.mktemp("tinypython"), TINYPYTHON_PATTERN, vocab_size=2048)


@pytest.fixture(scope="module")
def tok(gym):
    return build_released_tokenizer(gym)


def corpus():
    texts = {m: data_gym.read_module(m) for m in CORPUS_MODULES}
    texts["tokenize.py as CRLF"] = texts["tokenize.py"].replace("\n", "\r\n")
    texts["difflib.py with tabs"] = texts["difflib.py"].replace("    ", "\t")
    return {**texts, **EDGE_CASES}


def test_identical_to_tiktoken_on_python(gym, tok):
    enc = data_gym.tiktoken_encoding(gym, TINYPYTHON_PATTERN, eot_id=TINYPYTHON_EOT_ID)
    n_tokens = 0
    for name, text in corpus().items():
        ours = tok.encode(text, add_special_tokens=False)
        assert ours == enc.encode(text, allowed_special="all"), name
        assert tok.decode(ours) == text, name
        n_tokens += len(ours)
    assert n_tokens > 200_000


def test_vocabulary_with_fewer_tokens_than_the_end_of_text_id(tmp_path):
    """tiktoken puts <|endoftext|> at 2047 whatever the BPE's size; so does ours."""
    folder = data_gym.write_data_gym(tmp_path, TINYPYTHON_PATTERN, vocab_size=600)
    small = build_released_tokenizer(folder)
    enc = data_gym.tiktoken_encoding(folder, TINYPYTHON_PATTERN, eot_id=TINYPYTHON_EOT_ID)
    for name, text in EDGE_CASES.items():
        assert small.encode(text, add_special_tokens=False) == enc.encode(text, allowed_special="all"), name
    assert small.eos_token_id == 2047


def test_special_token_and_name(tok):
    assert len(tok) == 2048
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == TINYPYTHON_EOT_ID
    assert tok.convert_ids_to_tokens(TINYPYTHON_EOT_ID) == "<|endoftext|>"
    assert tokenizer_name(tok) == "tinypython_2k"


def test_a_newline_is_never_merged_with_indentation(tok):
    for name, text in corpus().items():
        for piece in tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False)):
            text_piece = tok.convert_tokens_to_string([piece])
            assert not re.search(r"[\r\n][ \t]", text_piece), (name, text_piece)


def test_files_that_do_not_match_are_refused(gym, tmp_path):
    lines = (gym / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    lines[5], lines[6] = lines[6], lines[5]  # two merges out of rank order
    (tmp_path / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")
    (tmp_path / "encoder.json").write_text((gym / "encoder.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(CheckpointError, match="do not match"):
        build_released_tokenizer(tmp_path)


# ---------------------------------------------------------------------------- attached to released models
def write_mirror(root, gym, name="csp_yolo1"):
    """The release's layout under ``root``: models/<name>/ and tinypython/."""
    beeg, sd = ref.random_released_checkpoint(vocab=2048, bigram=False)
    folder = root / "models" / name
    folder.mkdir(parents=True)
    (folder / "beeg_config.json").write_text(json.dumps(beeg))
    torch.save(sd, folder / "final_model.pt")
    (root / "tinypython").mkdir()
    for file in ("encoder.json", "vocab.bpe"):
        (root / "tinypython" / file).write_bytes((gym / file).read_bytes())
    return folder


@pytest.fixture
def released(tmp_path, gym, monkeypatch):
    """``openai/csp_yolo1`` from a file:// mirror (downloaded into an empty cache)."""
    write_mirror(tmp_path / "mirror", gym)
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "mirror").as_uri())
    return HookedSparseTransformer.from_pretrained("openai/csp_yolo1")


def test_released_model_comes_with_its_tokenizer(released, gym):
    assert released.cfg.tokenizer_name == "tinypython_2k"
    assert tokenizer_name(released.tokenizer) == "tinypython_2k"
    enc = data_gym.tiktoken_encoding(gym, TINYPYTHON_PATTERN, eot_id=TINYPYTHON_EOT_ID)
    text = "def f(x):\n    return x  # ok\n"
    assert released.to_tokens(text)[0].tolist() == enc.encode(text)
    assert released.to_string(released.to_tokens(text)[0]) == text


def test_released_tokenizer_survives_a_resave(released, tmp_path):
    path = released.save_pretrained(tmp_path / "resaved")
    assert json.loads((path / "tokenizer_config.json").read_text())[NAME_KEY] == "tinypython_2k"
    loaded = HookedSparseTransformer.from_pretrained(path)
    assert loaded.cfg.tokenizer_name == "tinypython_2k" and tokenizer_name(loaded.tokenizer) == "tinypython_2k"
    text = "for i in range(3):\n\tprint(i)\r\n"
    assert torch.equal(loaded.to_tokens(text), released.to_tokens(text))


def test_released_directory_finds_its_tokenizer_in_the_release_layout(tmp_path, gym, monkeypatch):
    folder = write_mirror(tmp_path / "mirror", gym)
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "nowhere").as_uri())  # nothing to download
    assert tokenizer_name(HookedSparseTransformer.from_pretrained(folder).tokenizer) == "tinypython_2k"


def test_released_directory_without_tokenizer_downloads_it_or_says_how_to_do_without(tmp_path, gym, monkeypatch):
    folder = write_mirror(tmp_path / "mirror", gym)
    alone = tmp_path / "alone"
    folder.rename(alone)
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "nowhere").as_uri())
    with pytest.raises(CheckpointError, match="needs the released 'tinypython_2k' tokenizer.*tokenizer=None"):
        HookedSparseTransformer.from_pretrained(alone)
    assert HookedSparseTransformer.from_pretrained(alone, tokenizer=None).tokenizer is None
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "mirror").as_uri())
    assert HookedSparseTransformer.from_pretrained(alone).tokenizer is not None
    assert (tmp_path / "cache" / "tinypython" / "vocab.bpe").exists()


# ---------------------------------------------------------------------------- names
def test_a_tokenizer_of_another_name_is_refused(released, tok):
    with pytest.raises(ValueError, match=f"'{SHIPPED_TOKENIZER_NAME}' but the model was trained with 'tinypython_2k'"):
        released.set_tokenizer(load_tokenizer())
    shipped = HookedSparseTransformer.from_pretrained("sparse-pygen-2l-128")
    with pytest.raises(ValueError, match=f"'tinypython_2k' but the model was trained with '{SHIPPED_TOKENIZER_NAME}'"):
        shipped.set_tokenizer(tok)


def test_our_models_record_the_shipped_tokenizer_name(tmp_path):
    shipped = HookedSparseTransformer.from_pretrained("sparse-pygen-2l-128")
    assert shipped.cfg.tokenizer_name == SHIPPED_TOKENIZER_NAME
    assert tokenizer_name(load_tokenizer()) == SHIPPED_TOKENIZER_NAME
    # a checkpoint saved before names were recorded: config tokenizer_name null, no name in tokenizer_config.json
    path = shipped.save_pretrained(tmp_path / "old")
    header = json.loads((path / "config.json").read_text())
    header["config"]["tokenizer_name"] = None
    (path / "config.json").write_text(json.dumps(header))
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    tok_cfg.pop(NAME_KEY, None)
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    assert HookedSparseTransformer.from_pretrained(path).cfg.tokenizer_name == SHIPPED_TOKENIZER_NAME


# ---------------------------------------------------------------------------- tasks under the model's tokenizer
def test_indent_for_refuses_a_tokenizer_that_never_merges_newline_and_indentation(tok):
    with pytest.raises(ValueError, match=r"'indent_for' cannot be built for the tokenizer 'tinypython_2k'.*never merges a newline with the indentation"):  # noqa: E501
        get_task("indent_for", tokenizer=tok)


def test_indent_for_under_the_shipped_tokenizer():
    task = get_task("indent_for", tokenizer=load_tokenizer())
    assert sorted(task.target_ids) == ["\n" + " " * n for n in (8, 12, 16)]


def test_tasks_use_the_released_models_tokenizer(released):
    """A task built for a released model checks and encodes its targets with the model's tokenizer."""
    task = get_task("if_equals", tokenizer=released.tokenizer)
    assert task.tokenizer is released.tokenizer
    for target, token_id in task.target_ids.items():
        assert released.tokenizer.encode(target, add_special_tokens=False) == [token_id]
    batch = task.batch(n=4)
    assert batch.tokens[0, 0] == TINYPYTHON_EOT_ID
    assert released.to_string(batch.tokens[0, 1 : batch.read_pos[0] + 1]) == batch.pairs[0].prompt_a
