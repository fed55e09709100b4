"""pretraining_means: over the model's own corpus, computed once into the cache, reused; never written
into the model's folder unless asked (save_to), and shipped means are read from there."""

import pytest
import torch
from conftest import tiny_config

import sparselens.interventions.means as means_module
from sparselens import HookedSparseTransformer
from sparselens.data import iter_batches, load_corpus, load_tokenizer
from sparselens.interventions import compute_means, pretraining_means


@pytest.fixture
def saved_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + 'abc'\n" * 20)
    model = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=16, d_vocab=2048), tokenizer=load_tokenizer())
    model.save_pretrained(tmp_path / "model")
    return HookedSparseTransformer.from_pretrained(tmp_path / "model"), str(corpus), tmp_path


def test_means_are_cached_and_reused(saved_model, monkeypatch):
    model, corpus, tmp_path = saved_model
    means = pretraining_means(model, n_batches=3, batch_size=2, source=corpus, progress=False)
    assert not (tmp_path / "model" / "node_means.safetensors").exists()  # the model folder is left alone
    assert len(list((tmp_path / "cache" / "means").glob("*.safetensors"))) == 1
    # independent: the same batches through compute_means
    tokens = load_corpus(corpus, n_ctx=16, split="train", tokenizer=model.tokenizer, progress=False)
    expected = compute_means(model, iter_batches(tokens, batch_size=2, seed=0), n_batches=3, progress=False)
    for name in expected:
        torch.testing.assert_close(means[name], expected[name])

    def refuse(*args, **kwargs):
        raise AssertionError("means were recomputed instead of reused")

    monkeypatch.setattr(means_module, "compute_means", refuse)
    again = pretraining_means(model, n_batches=3, batch_size=2, source=corpus, progress=False)
    assert all(torch.equal(again[k], means[k]) for k in means)
    with pytest.raises(AssertionError, match="recomputed"):  # other settings are not served from the file
        pretraining_means(model, n_batches=4, batch_size=2, source=corpus, progress=False)


def test_changed_weights_invalidate_the_saved_means(saved_model):
    model, corpus, _ = saved_model
    before = pretraining_means(model, n_batches=2, batch_size=2, source=corpus, progress=False)
    with torch.no_grad():
        model.blocks[0].mlp.fc_in.weight.mul_(2)
    after = pretraining_means(model, n_batches=2, batch_size=2, source=corpus, progress=False)
    assert not torch.equal(after["blocks.0.mlp.hook_post"], before["blocks.0.mlp.hook_post"])


def test_default_corpus_is_the_models_own_and_save_to_ships_the_means(saved_model, monkeypatch):
    model, corpus, tmp_path = saved_model
    with pytest.raises(ValueError, match="pretraining corpus is unknown.*train_config.yaml does not exist"):
        pretraining_means(model, n_batches=2, batch_size=2, progress=False)
    (tmp_path / "model" / "train_config.yaml").write_text(f"data: {{source: {corpus}, options: {{cache_dir: x}}}}\n")
    shipped = tmp_path / "model" / "node_means.safetensors"
    means = pretraining_means(model, n_batches=2, batch_size=2, progress=False, save_to=shipped)
    explicit = pretraining_means(model, n_batches=2, batch_size=2, source=corpus, progress=False)
    assert all(torch.equal(means[k], explicit[k]) for k in means)  # the same corpus, the same key
    monkeypatch.setattr(means_module, "compute_means", lambda *a, **k: pytest.fail("recomputed"))
    for f in (tmp_path / "cache" / "means").glob("*.safetensors"):
        f.unlink()  # only the shipped file is left: it is read, not recomputed
    again = pretraining_means(model, n_batches=2, batch_size=2, progress=False)
    assert all(torch.equal(again[k], means[k]) for k in means)
    (tmp_path / "model" / "train_config.yaml").write_text("data: {source: synthetic}\n")
    with pytest.raises(ValueError, match="not a corpus; pass source"):
        pretraining_means(model, n_batches=2, batch_size=2, progress=False)
