"""The shipped tokenizer, its rebuild, and corpus packing/splitting/caching."""

import json

import numpy as np
import pytest
import torch

from sparselens.data import EOT, TOKENIZER_DIR, document_split, iter_batches, load_corpus, load_tokenizer, stdlib_dir
from sparselens.data.build_tokenizer import REQUIRED_TOKENS, save_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


# ---------------------------------------------------------------------------------------- tokenizer
def test_shipped_tokenizer_size_and_eot(tok):
    assert len(tok) == 2048
    assert tok.convert_tokens_to_ids(EOT) == 2047
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == 2047
    assert tok.decode([2047]) == EOT
    assert sum(p.stat().st_size for p in TOKENIZER_DIR.iterdir()) < 1_000_000


def test_loads_with_auto_tokenizer_from_the_package_dir():
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    assert len(auto) == 2048 and auto.eos_token_id == 2047
    assert auto.encode("with open(p) as f:") == load_tokenizer().encode("with open(p) as f:")


def test_round_trips_python_source(tok):
    root = stdlib_dir()
    for rel in ("json/decoder.py", "textwrap.py", "string.py"):
        src = (root / rel).read_text(encoding="utf-8")
        ids = tok.encode(src, add_special_tokens=False)
        assert tok.decode(ids) == src
        assert len(ids) < len(src) / 2.5  # a real BPE, not bytes
    odd = "x = 'é\t漢字'  \r\n\n\tif a>=b:\n\t\treturn -0x1F # 🙂\n"
    assert tok.decode(tok.encode(odd)) == odd


def test_task_answer_tokens_are_single_tokens(tok):
    for piece in REQUIRED_TOKENS:
        assert len(tok.encode(piece, add_special_tokens=False)) == 1, piece
    # indentation is part of the newline token; keywords at line start carry no space
    assert tok.convert_ids_to_tokens(tok.encode("if x:\n        for i in range(n):")) == [
        "if", "Ġx", ":", "ĊĠĠĠĠĠĠĠĠ", "for", "Ġi", "Ġin", "Ġrange", "(", "n", "):"
    ]


def test_model_helpers_accept_the_tokenizer(tok):
    from sparselens import HookedSparseTransformer, SparseTransformerConfig

    model = HookedSparseTransformer(SparseTransformerConfig(n_layers=1, d_model=32, d_head=16, n_ctx=16))
    model.set_tokenizer(tok)
    assert model.to_single_token(" enumerate") == tok.convert_tokens_to_ids("Ġenumerate")
    assert model.to_tokens("x = 1", prepend_bos=True)[0, 0].item() == 2047
    assert model.to_str_tokens("x = [[1]]") == ["x", " =", " [", "[", "1", "]]"]


def test_rebuild_is_deterministic_on_a_small_corpus(tmp_path):
    files = [stdlib_dir() / rel for rel in ("textwrap.py", "string.py", "json/decoder.py")]
    a = train_tokenizer(files, vocab_size=400, required=(" enumerate",), prime_count=50, show_progress=False)
    b = train_tokenizer(reversed(files), vocab_size=400, required=(" enumerate",), prime_count=50, show_progress=False)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() == 400 and a.token_to_id(EOT) == 399
    assert len(a.encode(" enumerate").ids) == 1
    out = save_tokenizer(a, tmp_path / "tok")
    assert sorted(p.name for p in out.iterdir()) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    reloaded = load_tokenizer(out)
    assert len(reloaded) == 400 and reloaded.eos_token_id == 399


def test_tokenizer_build_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 258"):
        train_tokenizer([], vocab_size=100)
    with pytest.raises(ValueError, match="no readable UTF-8"):
        train_tokenizer([tmp_path / "missing.py"], vocab_size=300)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


# ------------------------------------------------------------------------------------------- corpus
def _write_docs(folder, n=12):
    """n small python files, some nested; returns {relative path: text}."""
    docs = {}
    for i in range(n):
        rel = f"pkg{i % 3}/doc{i}.py"
        text = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(5 + i))
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
        docs[rel] = text
    (folder / "blob.py").write_bytes(b"\x00\x01binary")  # not text: skipped
    return docs


def test_split_by_path_hash_is_stable_and_disjoint():
    # fixed values: the split must be the same on every machine and Python version
    assert [document_split(f"doc{i}.py") for i in (3, 46, 0, 1)] == ["val", "val", "train", "train"]
    assert document_split("asyncio/events.py") == "val" and document_split("json/decoder.py") == "train"
    ids = [f"pkg/mod{i}.py" for i in range(2000)]
    val = {d for d in ids if document_split(d) == "val"}
    assert 50 < len(val) < 150  # about 5%
    assert all(document_split(d, 0.5) == "val" for d in val)  # nested: a larger fraction only adds


def test_corpus_packing_joins_documents_with_eot(tmp_path, tok):
    src = tmp_path / "src"
    docs = _write_docs(src)
    n_ctx = 16
    rows = {s: load_corpus(src, n_ctx=n_ctx, split=s, tokenizer=tok, val_fraction=0.3, cache_dir=tmp_path / "c", progress=False)
            for s in ("train", "val")}
    for split, tokens in rows.items():
        assert tokens.dtype == torch.long and tokens.ndim == 2 and tokens.shape[1] == n_ctx
        expected = []
        for rel in sorted(docs):
            if document_split(rel, 0.3) == split:
                expected += [2047] + tok.encode(docs[rel], add_special_tokens=False)
        flat = tokens.flatten().tolist()
        assert len(flat) == len(expected) // n_ctx * n_ctx  # only the incomplete tail is dropped
        assert flat == expected[: len(flat)]
    train_docs = {r for r in docs if document_split(r, 0.3) == "train"}
    val_docs = set(docs) - train_docs
    assert train_docs and val_docs  # both non-empty at this fraction and seed-free hash
    assert rows["train"].shape[0] > rows["val"].shape[0] > 0


def test_corpus_cache_is_reused_and_invalidated(tmp_path, tok):
    src = tmp_path / "src"
    _write_docs(src)
    cache = tmp_path / "cache"
    a = load_corpus(src, n_ctx=8, tokenizer=tok, cache_dir=cache, progress=False)
    (folder,) = list(cache.iterdir())
    assert {p.name for p in folder.iterdir()} == {"train.npy", "val.npy", "meta.json"}
    assert json.loads((folder / "meta.json").read_text())["n_documents"] == 12
    assert np.load(folder / "train.npy").dtype == np.uint16
    b = load_corpus(src, n_ctx=4, tokenizer=tok, cache_dir=cache, progress=False)  # same stream, new n_ctx
    assert torch.equal(a.flatten(), b.flatten()[: a.numel()])
    assert len(list(cache.iterdir())) == 1
    (src / "pkg0" / "doc0.py").write_text("x = 1\n")
    load_corpus(src, n_ctx=8, tokenizer=tok, cache_dir=cache, progress=False)
    assert len(list(cache.iterdir())) == 2


def test_corpus_hostile_inputs(tmp_path, tok):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "image.bin").write_bytes(b"\x89PNG\x00\x00")
    with pytest.raises(ValueError, match=r"empty.*no text to train on.*UTF-8"):
        load_corpus(empty, tokenizer=tok, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match=r"files ending in \.py"):
        load_corpus(empty, extensions=(".py",), tokenizer=tok, cache_dir=tmp_path / "c", progress=False)
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="fewer than n_ctx=256"):
        load_corpus(one, tokenizer=tok, cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="unknown corpus split 'test'"):
        load_corpus(one, split="test", tokenizer=tok)
    with pytest.raises(FileNotFoundError, match="no_such_folder' does not exist"):
        load_corpus(tmp_path / "no_such_folder", tokenizer=tok)
    with pytest.raises(FileNotFoundError, match="no_such_folder' does not exist"):
        load_corpus(str(tmp_path / "no_such_folder"), tokenizer=tok)  # an absolute string is never a hub name
    with pytest.raises(NotADirectoryError, match="a.py"):
        load_corpus(one / "a.py", tokenizer=tok)


def test_iter_batches_is_seeded_and_resumable():
    tokens = torch.arange(10 * 4).view(10, 4)
    it = iter_batches(tokens, batch_size=3, seed=7)
    first = [next(it) for _ in range(7)]
    assert all(b.shape == (3, 4) for b in first)
    epoch0 = torch.cat(first[:3])[:, 0] // 4
    assert len(set(epoch0.tolist())) == 9  # no row twice within an epoch
    resumed = iter_batches(tokens, batch_size=3, seed=7, start_step=4)
    assert all(torch.equal(next(resumed), b) for b in first[4:])
    other = iter_batches(tokens, batch_size=3, seed=8)
    assert not all(torch.equal(next(other), b) for b in first)
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(tokens, batch_size=11))
