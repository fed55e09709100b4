"""save_pretrained / from_pretrained, the released checkpoint format, and broken checkpoints."""

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import data_gym
import nanogpt_reference as ref
import pytest
import torch
from conftest import randomize, tiny_config
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sparselens import HookedSparseTransformer, pretrained
from sparselens.errors import CheckpointError
from sparselens.pretrained.released import TINYPYTHON_PATTERN

# The random released checkpoints have 64 tokens, so no tinypython_2k tokenizer fits them.
NO_TOKENIZER = dict(tokenizer=None)


def write_released(path, beeg, sd):
    path.mkdir(parents=True, exist_ok=True)
    (path / "beeg_config.json").write_text(json.dumps(beeg))
    torch.save(sd, path / "final_model.pt")
    return path


def write_release_mirror(root, name="csp_yolo1", vocab=2048, **variant):
    """A local copy of the release's layout: <root>/models/<name>/ and <root>/tinypython/."""
    beeg, sd = ref.random_released_checkpoint(vocab=vocab, **variant)
    write_released(root / "models" / name, beeg, sd)
    data_gym.write_data_gym(root / "tinypython", TINYPYTHON_PATTERN, vocab_size=2048)
    return beeg, sd


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
    model = HookedSparseTransformer.from_pretrained(write_released(tmp_path / "released", beeg, sd), **NO_TOKENIZER)
    tokens = torch.randint(0, beeg["vocab_size"], (2, beeg["block_size"]), generator=torch.Generator().manual_seed(3))
    expected = ref.forward(sd, beeg, tokens, eps=torch.finfo(torch.float32).eps)
    torch.testing.assert_close(model(tokens), expected, rtol=1e-4, atol=1e-4)
    assert model.cfg.attn_sink == beeg["sink"] and model.cfg.bigram_table == beeg["enable_bigram_table"]
    assert model.cfg.d_mlp == beeg["n_mlp"] and model.cfg.n_ctx == beeg["block_size"]


def test_released_checkpoint_can_be_resaved(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    model = HookedSparseTransformer.from_pretrained(write_released(tmp_path / "released", beeg, sd), **NO_TOKENIZER)
    model.save_pretrained(tmp_path / "ours")
    tokens = torch.randint(0, beeg["vocab_size"], (2, 8))
    assert torch.equal(HookedSparseTransformer.from_pretrained(tmp_path / "ours")(tokens), model(tokens))


def test_released_model_downloads_by_name(tmp_path, monkeypatch):
    """The real download path, pointed at a local file:// mirror of the released layout."""
    beeg, sd = write_release_mirror(tmp_path / "mirror")
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "mirror").as_uri())
    assert "openai/csp_yolo1" in pretrained.list_models()
    model = HookedSparseTransformer.from_pretrained("openai/csp_yolo1")
    assert (tmp_path / "cache" / "models" / "csp_yolo1" / "final_model.pt").exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "tinypython").iterdir()) == ["encoder.json", "vocab.bpe"]
    assert model.tokenizer is not None and model.cfg.tokenizer_name == "tinypython_2k"
    tokens = torch.randint(0, beeg["vocab_size"], (1, 8))
    torch.testing.assert_close(model(tokens), ref.forward(sd, beeg, tokens, torch.finfo(torch.float32).eps), rtol=1e-4, atol=1e-4)


def test_released_url_ending_in_models_is_still_understood(tmp_path, monkeypatch):
    """$SPARSELENS_RELEASED_URL used to name <root>/models; that still works."""
    write_release_mirror(tmp_path / "mirror")
    monkeypatch.setenv("SPARSELENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPARSELENS_RELEASED_URL", (tmp_path / "mirror" / "models").as_uri() + "/")
    assert pretrained.released_base_url() == (tmp_path / "mirror").as_uri()
    assert HookedSparseTransformer.from_pretrained("openai/csp_yolo1").tokenizer is not None


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
        HookedSparseTransformer.from_pretrained(path, **NO_TOKENIZER)


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
        HookedSparseTransformer.from_pretrained(write_released(tmp_path, beeg, sd), **NO_TOKENIZER)


@pytest.mark.parametrize("extra, why", [
    ({"transformer.h.0.ln_1.bias": torch.zeros(32), "transformer.ln_f.bias": torch.zeros(32)}, "LayerNorm biases"),
    ({"bigram_table": torch.zeros(64, 64)}, "a bigram table the config turns off"),
    ({"transformer.h.1.attn.attn_imp.sink_logit": torch.zeros(2)}, "a sink the config turns off"),
])
def test_released_tensors_the_config_does_not_use_are_refused(tmp_path, extra, why):
    beeg, sd = ref.random_released_checkpoint(sink=False, bigram=False)
    with pytest.raises(CheckpointError, match="does not account for") as err:
        HookedSparseTransformer.from_pretrained(write_released(tmp_path, beeg, {**sd, **extra}), **NO_TOKENIZER)
    for key in extra:
        assert key in str(err.value), why


def test_released_bias_free_model_with_biases_is_refused(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    with pytest.raises(CheckpointError, match=r"does not account for.*attn\.c_attn\.bias"):
        HookedSparseTransformer.from_pretrained(write_released(tmp_path, {**beeg, "bias": False}, sd), **NO_TOKENIZER)


def test_released_causal_mask_buffer_is_accepted_only_if_causal(tmp_path):
    """The non-flash attention saves its causal mask as ``attn.bias``; it is the one tensor not used."""
    beeg, sd = ref.random_released_checkpoint()
    n = beeg["block_size"]
    masks = {f"transformer.h.{l}.attn.bias": torch.ones(n, n).tril().view(1, 1, n, n) for l in range(beeg["n_layer"])}
    model = HookedSparseTransformer.from_pretrained(write_released(tmp_path / "ok", beeg, {**sd, **masks}), **NO_TOKENIZER)
    tokens = torch.randint(0, beeg["vocab_size"], (1, 8))
    torch.testing.assert_close(model(tokens), ref.forward(sd, beeg, tokens, torch.finfo(torch.float32).eps), rtol=1e-4, atol=1e-4)
    masks["transformer.h.0.attn.bias"] = torch.ones(1, 1, n, n)
    with pytest.raises(CheckpointError, match="not the causal mask"):
        HookedSparseTransformer.from_pretrained(write_released(tmp_path / "bad", beeg, {**sd, **masks}), **NO_TOKENIZER)


def test_released_checkpoint_loads_in_another_dtype(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    path = write_released(tmp_path, beeg, sd)
    model = HookedSparseTransformer.from_pretrained(path, dtype=torch.bfloat16, **NO_TOKENIZER)
    assert model.cfg.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for name, p in HookedSparseTransformer.from_pretrained(path, **NO_TOKENIZER).state_dict().items():
        assert torch.equal(model.state_dict()[name], p.to(torch.bfloat16)), name
    # a bf16 file loads as float32 by default (the released dtype), converted tensor by tensor
    write_released(tmp_path / "half", beeg, {k: v.to(torch.bfloat16) for k, v in sd.items()})
    assert {p.dtype for p in HookedSparseTransformer.from_pretrained(tmp_path / "half", **NO_TOKENIZER).parameters()} == {torch.float32}


def test_saved_model_loads_in_another_dtype(tiny_model, tokens, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    model = HookedSparseTransformer.from_pretrained(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for name, t in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], t.to(torch.bfloat16)), name
    assert model(tokens).dtype == torch.bfloat16


def test_checkpoint_and_pretrained_modules_do_not_import_each_other():
    """sparselens.model.checkpoint knows nothing of sparselens.pretrained (which depends on it)."""
    code = textwrap.dedent("""
        import sys
        import sparselens.model.checkpoint
        assert "sparselens.pretrained" not in sys.modules, "checkpoint imports pretrained"
        import sparselens.pretrained
        import sparselens.pretrained.released
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


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


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS through Linux /proc")
def test_loading_a_released_checkpoint_holds_it_in_memory_once(tmp_path):
    """Memory-mapped and assigned, not read and copied: peak RSS added by the load is about one
    checkpoint (the old way, torch.load + copy into a new model, was 2.1x; benchmarks/load_released.py)."""
    spec = importlib.util.spec_from_file_location("load_released", Path(__file__).parents[1] / "benchmarks" / "load_released.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.measure(bench.write_checkpoint(tmp_path, size_mb=64, d_model=512), "new")
    assert report["file_bytes"] > 60 * 2**20
    assert report["peak_over_file"] < 1.6, report  # fixed overheads weigh more in a small file


def test_editing_a_loaded_released_model_leaves_its_file_and_tied_weights_alone(tmp_path):
    """The parameters are (copy-on-write) views of the mapped file until written to."""
    beeg, sd = ref.random_released_checkpoint(tied=True)
    path = write_released(tmp_path, beeg, sd)
    before = (path / "final_model.pt").read_bytes()
    model = HookedSparseTransformer.from_pretrained(path, **NO_TOKENIZER)
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model.embed.W_E.zero_()
        model.blocks[0].mlp.fc_in.weight.mul_(2)
    assert (path / "final_model.pt").read_bytes() == before
    assert torch.equal(model.unembed.weight, sd["transformer.wte.weight"])  # the unembedding is its own copy
    assert torch.equal(HookedSparseTransformer.from_pretrained(path, **NO_TOKENIZER).embed.W_E, sd["transformer.wte.weight"])


def test_released_checkpoint_in_torch_legacy_format_loads(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    tmp_path.joinpath("beeg_config.json").write_text(json.dumps(beeg))
    torch.save(sd, tmp_path / "final_model.pt", _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    tokens = torch.randint(0, beeg["vocab_size"], (1, 8))
    model = HookedSparseTransformer.from_pretrained(tmp_path, **NO_TOKENIZER)
    torch.testing.assert_close(model(tokens), ref.forward(sd, beeg, tokens, torch.finfo(torch.float32).eps), rtol=1e-4, atol=1e-4)


def test_released_tokenizer_follows_the_config(tmp_path):
    beeg, sd = ref.random_released_checkpoint()
    model = HookedSparseTransformer.from_pretrained(write_released(tmp_path / "none", {**beeg, "tokenizer_name": None}, sd))
    assert model.tokenizer is None and model.cfg.tokenizer_name is None
    other = write_released(tmp_path / "other", {**beeg, "tokenizer_name": "gpt2"}, sd)
    with pytest.raises(CheckpointError, match="tokenizer 'gpt2'; sparselens can build only 'tinypython_2k'"):
        HookedSparseTransformer.from_pretrained(other)
    assert HookedSparseTransformer.from_pretrained(other, **NO_TOKENIZER).cfg.tokenizer_name == "gpt2"
