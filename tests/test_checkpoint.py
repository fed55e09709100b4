"""save_pretrained / from_pretrained, the released checkpoint format, and broken checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import nanogpt_reference as ref
from conftest import randomize, tiny_config
from sparselens import HookedSparseTransformer, pretrained
from sparselens.errors import CheckpointError


def write_released(path, beeg, sd):
    path.mkdir(parents=True, exist_ok=True)
    (path / "beeg_config.json").write_text(json.dumps(beeg))
    torch.save(sd, path / "final_model.pt")
    return path


def test_save_and_load_give_identical_logits(any_model, tokens, tmp_path):
    any_model.save_pretrained(tmp_path / "m")
    loaded = HookedSparseTransformer.from_pretrained(tmp_path / "m")
    assert loaded.cfg == any_model.cfg
    assert torch.equal(loaded(tokens), any_model(tokens))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def weight_sparse(model, density=0.125, seed=0):
    """Zero all but a random ``density`` of every weight matrix, as the sparse trainer leaves them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(torch.rand(p.shape, generator=g) < density)
    return model


def test_weight_sparse_matrices_are_stored_compactly_and_exactly(tiny_model, tokens, tmp_path):
    dense_bytes = (tiny_model.save_pretrained(tmp_path / "dense") / "model.safetensors").stat().st_size
    weight_sparse(tiny_model)
    path = tiny_model.save_pretrained(tmp_path / "sparse")
    stored = load_file(str(path / "model.safetensors"))
    assert "blocks.0.mlp.fc_in.weight.nonzero_index" in stored and "blocks.0.mlp.fc_in.weight" not in stored
    assert (path / "model.safetensors").stat().st_size < 0.35 * dense_bytes  # 1/8 nonzero: 8 bytes each
    loaded = HookedSparseTransformer.from_pretrained(path)
    for name, t in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    assert torch.equal(loaded(tokens), tiny_model(tokens))


def test_version_1_dense_files_still_load(tiny_model, tokens, tmp_path):
    weight_sparse(tiny_model).save_pretrained(tmp_path)
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    header = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**header, "format_version": 1}))
    assert torch.equal(HookedSparseTransformer.from_pretrained(tmp_path)(tokens), tiny_model(tokens))


def test_corrupt_compact_entry_is_refused(tiny_model, tmp_path):
    path = weight_sparse(tiny_model).save_pretrained(tmp_path)
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    stored = load_file(str(path / "model.safetensors"))
    stored["blocks.0.mlp.fc_in.weight.nonzero_index"][-1] = 10**8
    save_file(stored, str(path / "model.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="compact entries of 'blocks.0.mlp.fc_in.weight' .* corrupt"):
        HookedSparseTransformer.from_pretrained(path)


@pytest.mark.parametrize("variant", [
    dict(),
    dict(sink=False, bigram=False, wpe=False),
    dict(tied=True),
    dict(loctypes="attn_in,attn_out,mlp_in,mlp_out"),  # the released default
])
def test_released_checkpoint_matches_independent_forward(tmp_path, variant):
    beeg, sd = ref.random_released_checkpoint(**variant)
    model = HookedSparseTransformer.from_pretrained(write_released(tmp_path / "released", beeg, sd))
    tokens = torch.randint(0, beeg["vocab_size"], (2, beeg["block_size"]), generator=torch.Generator().manual_seed(3))
    expected = ref.forward(sd, beeg, tokens, eps=torch.finfo(torch.float32).eps)
    torch.testing.assert_close(model(tokens), expected, rtol=1e-4, atol=1e-4)
    assert model.cfg.attn_sink == beeg["sink"] and model.cfg.bigram_table == beeg["enable_bigram_table"]
    assert model.cfg.d_mlp == beeg["n_mlp"] and model.cfg.n_ctx == beeg["block_size"]


def test_released_checkpoint_can_be_resaved(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    model = HookedSparseTransformer.from_pretrained(write_released(tmp_path / "released", beeg, sd))
    model.save_pretrained(tmp_path / "ours")
    tokens = torch.randint(0, beeg["vocab_size"], (2, 8))
    assert torch.equal(HookedSparseTransformer.from_pretrained(tmp_path / "ours")(tokens), model(tokens))


def test_released_model_downloads_by_name(tmp_path, monkeypatch):
    """The real download path, pointed at a local file:// mirror of the released layout."""
    beeg, sd = ref.random_released_checkpoint()
    write_released(tmp_path / "mirror" / "csp_yolo1", beeg, sd)
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "mirror").as_uri())
    assert "openai/csp_yolo1" in pretrained.list_models()
    model = HookedSparseTransformer.from_pretrained("openai/csp_yolo1")
    assert (tmp_path / "cache" / "models" / "csp_yolo1" / "final_model.pt").exists()
    tokens = torch.randint(0, beeg["vocab_size"], (1, 8))
    torch.testing.assert_close(model(tokens), ref.forward(sd, beeg, tokens, torch.finfo(torch.float32).eps), rtol=1e-4, atol=1e-4)


def test_failed_download_is_explained_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "nowhere").as_uri())
    with pytest.raises(CheckpointError, match="could not download .*download the files by hand"):
        HookedSparseTransformer.from_pretrained("openai/csp_yolo2")
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_unknown_name_suggests_registered_one():
    with pytest.raises(CheckpointError, match="did you mean 'openai/csp_yolo1'"):
        HookedSparseTransformer.from_pretrained("openai/csp_yol1")


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="holds no checkpoint: expected config.json"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_missing_weights_file(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_truncated_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_truncated_released_weights(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    path = write_released(tmp_path, beeg, sd)
    data = (path / "final_model.pt").read_bytes()
    (path / "final_model.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        HookedSparseTransformer.from_pretrained(path)


def test_corrupt_config_json(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "sparselens", "conf')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_config_that_does_not_match_weights(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    header["config"]["d_mlp"] = 128
    (tmp_path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"does not match the model's architecture: wrong shapes .*fc_in.weight"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_future_format_version(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    header["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="format version 99"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_nan_weights_are_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(tmp_path / "model.safetensors"))
    state["blocks.0.mlp.fc_in.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "model.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in \['blocks.0.mlp.fc_in.weight'\]"):
        HookedSparseTransformer.from_pretrained(tmp_path)


def test_unsupported_released_architecture(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    beeg["rms_norm"] = False
    with pytest.raises(CheckpointError, match="rms_norm=False"):
        HookedSparseTransformer.from_pretrained(write_released(tmp_path, beeg, sd))


def test_tokenizer_is_saved_and_restored(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "print('hello world')"] * 20, trainer)
    from tokenizers import decoders
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    model = randomize(HookedSparseTransformer(tiny_config(d_vocab=300)), seed=2)
    model.set_tokenizer(hf)
    model.save_pretrained(tmp_path)
    loaded = HookedSparseTransformer.from_pretrained(tmp_path)
    text = "def f(x):\n    return x"
    tokens = loaded.to_tokens(text)
    assert loaded.to_string(tokens[0]) == text
    assert "".join(loaded.to_str_tokens(text)) == text
    assert loaded.to_single_token("<|endoftext|>") == hf.eos_token_id
    with pytest.raises(ValueError, match="not one"):
        loaded.to_single_token("def f(x)")
    assert torch.equal(loaded(text), model(text))
    batch = loaded.to_tokens(["def f", "print('hello world')"])
    assert batch.shape[0] == 2 and int(batch[0, -1]) == hf.eos_token_id  # right-padded with end-of-text
