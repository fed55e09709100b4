"""Bridges with other dense models (issue 13, item 6): a TransformerLens 4 ``TransformerBridge`` of a
GPT-2-architecture Hugging Face model built offline from a local config and the shipped tokenizer,
and the shipped dense HookedSparseTransformer. The bridge code is the same for both."""

import copy
import json
import math
import socket
import types

import pytest
import torch
import transformers
from conftest import randomize, tiny_config
from safetensors import safe_open
from transformer_lens.model_bridge import TransformerBridge

from sparselens import HookedSparseTransformer
from sparselens.bridges import (
    Bridges,
    bridge_losses,
    capture,
    dense_from_site,
    evaluate_bridges,
    run_replaced,
    sparse_from_site,
    train_bridges,
)
from sparselens.bridges.train import CHECKPOINT_FILE, METRICS_FILE
from sparselens.data import load_tokenizer
from sparselens.data.pygen import generate_program
from sparselens.errors import InputError
from sparselens.model.fingerprint import model_fingerprint
from sparselens.pretrained import SHIPPED_DIR
from sparselens.train import TokenSplits


def gpt2_bridge(seed=0, eval_mode=True):
    """(bridge, reference): a 2-layer, d_model 32 GPT-2 booted with no network, and an untouched copy of
    its Hugging Face model (booting replaces the model's submodules by bridge components in place)."""
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=2048, n_positions=128, attn_implementation="eager")
    with torch.random.fork_rng():  # Hugging Face initialises from the global generator
        torch.manual_seed(seed)
        hf = transformers.GPT2LMHeadModel(config)
    if eval_mode:
        hf.eval()
    reference = copy.deepcopy(hf)

    def refuse(*args, **kwargs):
        raise OSError("no network in these tests")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        bridge = TransformerBridge.boot_transformers("gpt2", hf_model=hf, tokenizer=load_tokenizer(), device="cpu")
    return bridge, reference


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_bridge()


@pytest.fixture(scope="module")
def sparse():
    """A sparse model (AbsTopK everywhere) of width 48 with the GPT-2's 2 layers and 2048-token vocabulary."""
    model = HookedSparseTransformer(tiny_config(d_model=48, d_vocab=2048), tokenizer=load_tokenizer())
    return randomize(model, seed=2)


@pytest.fixture(scope="module")
def code():
    """Python programs from the shipped models' generator, in the shipped tokenizer: [12, 32] token ids."""
    tok = load_tokenizer()
    ids: list[int] = []
    seed = 0
    while len(ids) < 12 * 32:
        ids += tok.encode(generate_program(seed)) + [tok.eos_token_id]
        seed += 1
    return torch.tensor(ids[: 12 * 32]).view(12, 32)


def forward_by_hand(hf, tokens, site=None, value=None):
    """The Hugging Face GPT-2's logits from its own modules, with the residual at ``site`` set to ``value``."""
    tr, n_pos = hf.transformer, tokens.shape[1]
    causal = torch.full((n_pos, n_pos), float("-inf")).triu(1)  # added to the attention scores
    h = tr.wte(tokens) + tr.wpe(torch.arange(n_pos))
    for l, block in enumerate(tr.h):
        h = value if site == f"blocks.{l}.hook_resid_pre" else h
        h = h + block.attn(block.ln_1(h), attention_mask=causal)[0]
        h = value if site == f"blocks.{l}.hook_resid_mid" else h
        h = h + block.mlp(block.ln_2(h))
        h = value if site == f"blocks.{l}.hook_resid_post" else h
    return hf.lm_head(tr.ln_f(h))


# ---------------------------------------------------------------------------- the TransformerBridge's hooks


def test_a_transformer_bridge_has_the_residual_hooks_and_config_bridges_read(gpt2, code):
    bridge, reference = gpt2
    assert (bridge.cfg.n_layers, bridge.cfg.d_model, bridge.cfg.d_vocab) == (2, 32, 2048)
    tokens = code[:3, :16]
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), reference(tokens).logits, atol=1e-5, rtol=0)
        # hook_resid_mid is an alias of ln2.hook_in, the MLP norm's input: replacing it alone leaves the
        # block's skip connection carrying its own resid_pre + attn_out, which is why replace_hooks
        # replaces hook_attn_out as well
        assert bridge.hook_dict["blocks.0.hook_resid_mid"] is bridge.hook_dict["blocks.0.ln2.hook_in"]
        value = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(0))
        one_hook = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_mid", lambda act, hook: value)])
        wanted = forward_by_hand(reference, tokens, "blocks.0.hook_resid_mid", value)
        assert (one_hook - wanted).abs().max() > 0.1
        for site in Bridges.identity(bridge).sites:
            torch.testing.assert_close(run_replaced(bridge, tokens, site, value),
                                       forward_by_hand(reference, tokens, site.hook_name, value), atol=1e-5, rtol=0)


@torch.no_grad()
def test_a_transformer_bridge_bridged_to_itself_gives_exactly_its_logits_at_every_site(gpt2, code):
    bridge, _ = gpt2
    identity = Bridges.identity(bridge)
    tokens = code[:3, :16]
    expected = bridge(tokens)
    _, resid = capture(bridge, tokens, identity.sites)
    for site in identity.sites:
        h = resid[site.hook_name]
        # at a mid site the skip connection gets resid_pre + ((resid_pre + attn_out) - resid_pre), which
        # rounds back to resid_pre + attn_out: the sum is recovered exactly
        assert torch.equal(sparse_from_site(bridge, identity, site, tokens, h), expected), site
        assert torch.equal(dense_from_site(bridge, identity, site, tokens, h), expected), site


@torch.no_grad()
def test_dense_from_the_final_site_is_the_final_layer_norm_and_unembedding_of_the_decoded_residual(gpt2, sparse, code):
    bridge, reference = gpt2
    bridges = Bridges.for_models(bridge, sparse)
    bridges.b_dec.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    tokens = code[:3, :16]
    _, h_sparse = capture(sparse, tokens, bridges.sites)
    value = h_sparse["blocks.1.hook_resid_post"] @ bridges.W_dec[4] + bridges.b_dec[4]  # g_final, by hand
    ln = reference.transformer.ln_f
    # the layer norm as the bridge's NormalizationBridge writes it (torch's layer_norm differs by rounding)
    centred = value - value.mean(-1, keepdim=True)
    normed = centred / (centred.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * ln.weight + ln.bias
    torch.testing.assert_close(normed, ln(value), atol=1e-5, rtol=0)
    got = dense_from_site(bridge, bridges, "final", tokens, h_sparse["blocks.1.hook_resid_post"])
    assert torch.equal(got, reference.lm_head(normed))
    assert (got - bridge(tokens)).abs().max() > 0.1  # the bridge's own residual was replaced


# ---------------------------------------------------------------------------- loss, training, evaluation


def test_bridges_between_a_transformer_bridge_and_a_sparse_model_train_and_evaluate(gpt2, sparse, code, tmp_path):
    bridge, _ = gpt2
    bridges = Bridges.for_models(bridge, sparse)
    assert (bridges.cfg.d_dense, bridges.cfg.d_sparse, bridges.cfg.n_sites) == (32, 48, 5)
    tokens = code[:4, :16]
    with torch.no_grad():
        losses = bridge_losses(bridge, sparse, bridges, tokens)
    for terms in (losses.nmse_enc, losses.nmse_dec, losses.kl_sparse, losses.kl_dense):
        assert terms.shape == (5,) and torch.isfinite(terms).all() and (terms > 0).all()

    dense_before, start = copy.deepcopy(bridge.state_dict()), copy.deepcopy(bridges.state_dict())
    splits = TokenSplits(train=code[:8, :16], val=code[8:12, :16])
    trained = train_bridges(bridge, sparse, tokens=splits, steps=3, batch_size=4, lr=1e-2, out_dir=tmp_path / "run",
                            progress=False, log_every=1, eval_every=3, eval_batches=1)
    records = [json.loads(line) for line in (tmp_path / "run" / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2, 3]
    assert all(math.isfinite(r.get("loss", r.get("val_loss"))) for r in records)
    assert all(torch.equal(v, dense_before[k]) for k, v in bridge.state_dict().items())  # the dense model stays frozen
    for name in ("W_enc", "W_dec", "b_dec"):
        moved = (trained.state_dict()[name] - start[name]).flatten(1).abs().amax(dim=1)
        assert (moved > 0).all(), name  # every site's maps trained, the mid sites' decoders through both hooks
    assert torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=False)["fingerprints"]["dense"] == model_fingerprint(bridge)

    result = evaluate_bridges(bridge, sparse, trained, splits.val, batch_size=4, progress=False)
    assert result.n_tokens == 4 * 16 and result.kl_dense_sparse > 0
    for row in result.sites:
        values = [row.fvu_dense_to_sparse, row.fvu_sparse_to_dense, row.kl_sparse_bridged, row.kl_dense_bridged,
                  row.kl_sparse_mean_ablated, row.kl_dense_mean_ablated]
        assert all(v == v and 0 <= v < float("inf") for v in values), row
    assert "| L0.resid_mid | `blocks.0.hook_resid_mid` |" in result.table()


def test_a_transformer_bridges_fingerprint_names_its_weights(gpt2, sparse, tmp_path):
    bridge, _ = gpt2
    assert model_fingerprint(bridge) == model_fingerprint(bridge)
    other, _ = gpt2_bridge(seed=1)  # same config, other weights
    assert model_fingerprint(other) != model_fingerprint(bridge)
    path = Bridges.for_models(bridge, sparse).save_pretrained(tmp_path / "b")
    Bridges.from_pretrained(path, dense=bridge, sparse=sparse)
    with pytest.raises(InputError, match="made for a dense model with fingerprint"):
        Bridges.from_pretrained(path, dense=other, sparse=sparse)


def test_a_fingerprint_reads_a_config_of_plain_attributes_and_values_json_cannot_write():
    def model(dtype, weight=1.0):
        m = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(m.weight, weight)
        torch.nn.init.zeros_(m.bias)
        m.cfg = types.SimpleNamespace(n_layers=1, dtype=dtype, act=object())  # object(): its text has an address
        return m

    assert model_fingerprint(model(torch.float32)) == model_fingerprint(model(torch.float32))
    assert model_fingerprint(model(torch.float32)) != model_fingerprint(model(torch.bfloat16))
    assert model_fingerprint(model(torch.float32)) != model_fingerprint(model(torch.float32, weight=2.0))


def test_dense_models_bridges_cannot_run_are_refused_with_what_to_do(gpt2, sparse):
    training, _ = gpt2_bridge(eval_mode=False)  # a Hugging Face model built from a config starts in training mode
    with pytest.raises(InputError, match=r"dropout in training mode \('.*', p=0.1; .*Call model.eval\(\)"):
        Bridges.for_models(training, sparse)
    bridge, _ = gpt2

    class WithoutAttnOut:  # a TransformerLens-style model whose blocks do not expose hook_attn_out
        cfg = bridge.cfg
        hook_dict = {k: v for k, v in bridge.hook_dict.items() if not k.endswith(".hook_attn_out")}

    with pytest.raises(InputError, match="the dense model .* has no hook point 'blocks.0.hook_attn_out'.*a mid site through hook_attn_out"):
        Bridges.for_models(WithoutAttnOut(), sparse)
    deeper = HookedSparseTransformer(tiny_config(n_layers=3, d_vocab=2048))
    with pytest.raises(InputError, match="the dense model has 2 layers and the sparse model 3"):
        Bridges.for_models(bridge, deeper)


# ---------------------------------------------------------------------------- the shipped dense baseline


@pytest.fixture(scope="module")
def shipped():
    return HookedSparseTransformer.from_pretrained("dense-pygen-2l-128"), HookedSparseTransformer.from_pretrained("sparse-pygen-2l-128")


@pytest.mark.parametrize("name", ["dense-pygen-2l-128", "sparse-pygen-2l-128"])
def test_the_shipped_models_fingerprints_are_the_ones_their_shipped_means_were_made_for(shipped, name):
    model = dict(zip(["dense-pygen-2l-128", "sparse-pygen-2l-128"], shipped))[name]
    with safe_open(str(SHIPPED_DIR / name / "node_means.safetensors"), "pt") as means:
        assert model_fingerprint(model) == means.metadata()["fingerprint"]


@torch.no_grad()
def test_bridges_between_the_shipped_dense_and_sparse_models_run_at_every_site(shipped, code):
    dense, sparse = shipped
    bridges = Bridges.for_models(dense, sparse)
    tokens = code[:4]
    _, h_dense = capture(dense, tokens, bridges.sites)
    _, h_sparse = capture(sparse, tokens, bridges.sites)
    for site in bridges.sites:
        for logits in (sparse_from_site(sparse, bridges, site, tokens, h_dense[site.hook_name]),
                       dense_from_site(dense, bridges, site, tokens, h_sparse[site.hook_name])):
            assert logits.shape == (4, 32, 2048) and torch.isfinite(logits).all(), site
    result = evaluate_bridges(dense, sparse, bridges, tokens, progress=False)
    assert result.n_tokens == 128 and len(result.sites) == 5
    assert all(torch.isfinite(torch.tensor([s.kl_dense_bridged, s.kl_sparse_bridged, s.fvu_sparse_to_dense])).all()
               for s in result.sites)
