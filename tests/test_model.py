"""HookedSparseTransformer: computation, hook points and shapes, TransformerLens integration."""

import nanogpt_reference as ref
import pytest
import torch
import torch.nn.functional as F
import transformer_lens
from conftest import randomize, tiny_config
from transformer_lens import ActivationCache, HookedRootModule, patching
from transformer_lens.config import TransformerLensConfig

from sparselens import HookedSparseTransformer
from sparselens.errors import UnknownNameError


def test_is_transformer_lens_native(tiny_model):
    assert isinstance(tiny_model, HookedRootModule)
    assert isinstance(tiny_model.cfg, TransformerLensConfig)
    assert all(isinstance(h, transformer_lens.hook_points.HookPoint) for h in tiny_model.hook_dict.values())


def test_logits_match_independent_forward(any_model, tokens):
    """The model equals a forward written independently from METHOD.md (tests/nanogpt_reference.py)."""
    beeg, sd = ref.export_to_released(any_model)
    expected = ref.forward(sd, beeg, tokens, eps=any_model.cfg.eps)
    torch.testing.assert_close(any_model(tokens), expected, rtol=1e-4, atol=1e-4)


def test_hook_shapes_follow_design(any_model, tokens):
    cfg = any_model.cfg
    b, p = tokens.shape
    _, cache = any_model.run_with_cache(tokens)
    shapes = {
        "hook_embed": (b, p, cfg.d_model),
        "ln_final.hook_scale": (b, p, 1),
        "ln_final.hook_normalized": (b, p, cfg.d_model),
    }
    for l in range(cfg.n_layers):
        for name in ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_in", "hook_attn_out",
                     "hook_mlp_in", "hook_mlp_out", "ln1.hook_normalized", "ln2.hook_normalized"]:
            shapes[f"blocks.{l}.{name}"] = (b, p, cfg.d_model)
        for name in ["ln1.hook_scale", "ln2.hook_scale"]:
            shapes[f"blocks.{l}.{name}"] = (b, p, 1)
        for name in ["q", "k", "v", "z"]:
            shapes[f"blocks.{l}.attn.hook_{name}"] = (b, p, cfg.n_heads, cfg.d_head)
        for name in ["attn_scores", "pattern"]:
            shapes[f"blocks.{l}.attn.hook_{name}"] = (b, cfg.n_heads, p, p)
        shapes[f"blocks.{l}.mlp.hook_pre"] = (b, p, cfg.d_mlp)
        shapes[f"blocks.{l}.mlp.hook_post"] = (b, p, cfg.d_mlp)
        if cfg.attn_sink:
            shapes[f"blocks.{l}.attn.hook_sink"] = (b, cfg.n_heads, p)
    if cfg.positional_embedding_type == "learned":
        shapes["hook_pos_embed"] = (1, p, cfg.d_model)
    if cfg.bigram_table:
        shapes["hook_bigram"] = (b, p, cfg.d_vocab)
    assert set(cache.keys()) == set(shapes)
    for name, shape in shapes.items():
        assert tuple(cache[name].shape) == shape, name


def test_activation_cache_api(any_model, tokens):
    logits, cache = any_model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["q", 0], cache["blocks.0.attn.hook_q"])
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])
    assert torch.equal(cache["resid_post", -1], cache[f"blocks.{any_model.cfg.n_layers - 1}.hook_resid_post"])
    acc = cache.accumulated_resid()
    assert acc.shape == (any_model.cfg.n_layers + 1, *tokens.shape, any_model.cfg.d_model)
    # the last accumulated residual through the final norm and unembedding gives the logits back
    final = cache.accumulated_resid(apply_ln=True)[-1]
    recomputed = final @ any_model.W_U + any_model.b_U
    if any_model.cfg.bigram_table:
        recomputed = recomputed + cache["hook_bigram"]
    torch.testing.assert_close(recomputed, logits, rtol=1e-4, atol=1e-4)


def test_pattern_and_sink_share_sum_to_one(tokens):
    model = randomize(HookedSparseTransformer(tiny_config(attn_sink=True)))
    _, cache = model.run_with_cache(tokens)
    for l in range(model.cfg.n_layers):
        pattern, sink = cache["pattern", l], cache[f"blocks.{l}.attn.hook_sink"]
        torch.testing.assert_close(pattern.sum(-1) + sink, torch.ones_like(sink))
        assert bool((sink > 0).all())
        assert bool((pattern.triu(1) == 0).all()), "attention to future keys"


def test_node_hooks_see_post_abstopk_values(tiny_model, tokens):
    cfg = tiny_model.cfg
    _, cache = tiny_model.run_with_cache(tokens)
    for site in tiny_model.node_sites:
        act = cache[site.hook_name].flatten(2)  # [batch pos n_nodes]
        k = int(cfg.afrac * act.shape[-1])
        assert int((act != 0).sum(-1).max()) <= k, site.name
        assert int((act != 0).sum(-1).min()) == k, site.name  # random weights: no exact zeros before top-k


def test_abstopk_sites_can_be_turned_off(tokens):
    model = HookedSparseTransformer(tiny_config(afrac=None))
    _, cache = model.run_with_cache(tokens)
    assert int((cache["post", 0] != 0).sum(-1).min()) > 0.25 * model.cfg.d_mlp
    only_neurons = HookedSparseTransformer(tiny_config(abstopk_sites=("neuron",)))
    _, cache = only_neurons.run_with_cache(tokens)
    assert int((cache["post", 0] != 0).sum(-1).max()) == int(0.25 * model.cfg.d_mlp)
    assert int((cache["mlp_out", 0] != 0).sum(-1).min()) > 0.25 * model.cfg.d_model


def test_return_types_and_loss(any_model, tokens):
    logits = any_model(tokens)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(any_model(tokens, return_type="loss"), expected)
    both_logits, both_loss = any_model(tokens, return_type="both")
    assert torch.equal(both_logits, logits) and torch.allclose(both_loss, expected)
    assert any_model(tokens, return_type=None) is None
    per_token = any_model(tokens, return_type="loss", loss_per_token=True)
    assert per_token.shape == (tokens.shape[0], tokens.shape[1] - 1)
    torch.testing.assert_close(per_token.mean(), expected)
    assert torch.equal(any_model(tokens[0]), logits[:1])  # a [pos] input is a batch of one


def test_stop_at_layer_returns_that_layers_residual(any_model, tokens):
    _, cache = any_model.run_with_cache(tokens)
    assert torch.equal(any_model(tokens, stop_at_layer=1), cache["resid_pre", 1])
    assert torch.equal(any_model(tokens, stop_at_layer=0), cache["resid_pre", 0])


def test_tl_weight_shapes(tiny_model):
    cfg = tiny_model.cfg
    L, H, D, Dh, M, V = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.d_vocab
    expected = {"W_Q": (L, H, D, Dh), "W_K": (L, H, D, Dh), "W_V": (L, H, D, Dh), "W_O": (L, H, Dh, D),
                "b_Q": (L, H, Dh), "b_K": (L, H, Dh), "b_V": (L, H, Dh), "b_O": (L, D),
                "W_in": (L, D, M), "W_out": (L, M, D), "b_in": (L, M), "b_out": (L, D),
                "W_E": (V, D), "W_U": (D, V), "b_U": (V,)}
    for name, shape in expected.items():
        assert tuple(getattr(tiny_model, name).shape) == shape, name
    assert not hasattr(tiny_model, "W_pos")  # positional_embedding_type="none"


def test_q_hook_is_the_projection_through_W_Q(tiny_model, tokens):
    """cache['q'] equals attn_in @ W_Q + b_Q followed by AbsTopK across heads (TL shapes agree)."""
    _, cache = tiny_model.run_with_cache(tokens)
    q = torch.einsum("bpd,hde->bphe", cache["attn_in", 0], tiny_model.W_Q[0]) + tiny_model.b_Q[0]
    flat = q.flatten(2)
    q_sparse = ref.abstopk_by_sort(flat, int(0.25 * flat.shape[-1])).view_as(q)
    torch.testing.assert_close(cache["q", 0], q_sparse, rtol=1e-5, atol=1e-6)


def test_init_follows_method(tokens):
    model = HookedSparseTransformer(tiny_config(n_layers=4, d_model=256, d_head=16))
    std = lambda t: float(t.detach().std())  # noqa: E731
    assert abs(std(model.blocks[0].attn.q_proj.weight) - 0.02) < 0.002
    assert abs(std(model.blocks[0].mlp.fc_out.weight) - 0.02 / (2 * 4) ** 0.5) < 0.001
    assert float(model.blocks[0].mlp.fc_in.bias.abs().max()) == 0
    assert torch.equal(model.ln_final.w, torch.ones(256))
    same = HookedSparseTransformer(tiny_config(n_layers=4, d_model=256, d_head=16))
    assert torch.equal(model.W_Q, same.W_Q), "seeded init is deterministic"


def test_transformer_lens_patching_runs_unchanged(tokens):
    model = randomize(HookedSparseTransformer(tiny_config())).eval()
    clean, corrupt = tokens[:1], tokens[1:2]
    _, clean_cache = model.run_with_cache(clean)
    answer = int(clean[0, -1])

    def metric(logits):
        return logits[0, -1, answer]

    result = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, metric)
    assert result.shape == (model.cfg.n_layers, clean.shape[1])

    # independent check of one entry: patch layer 1, position 4 by hand
    def patch(act, hook):
        act = act.clone()
        act[:, 4] = clean_cache["resid_pre", 1][:, 4]
        return act

    manual = metric(model.run_with_hooks(corrupt, fwd_hooks=[("blocks.1.hook_resid_pre", patch)]))
    torch.testing.assert_close(result[1, 4], manual)


def test_unknown_hook_name_suggests_nearest(tiny_model, tokens):
    with pytest.raises(UnknownNameError, match="did you mean 'blocks.0.hook_resid_pre'"):
        tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pree", lambda x, hook: x)])


def test_hook_returning_wrong_shape_is_named(tiny_model, tokens):
    with pytest.raises(ValueError, match=r"blocks.1.hook_mlp_out.*returned shape \(3, 12, 63\)"):
        tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", lambda x, hook: x[..., :-1])])


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((1, 5), 128), r"token ids must be in \[0, 128\)"),
        (torch.full((1, 5), -1), r"token ids must be in"),
        (torch.zeros(1, 33, dtype=torch.long), "exceeds the model's context n_ctx=32"),
        (torch.zeros(1, 5), "integer tensor"),
        (torch.zeros(1, 2, 3, dtype=torch.long), r"shape \[batch, pos\]"),
    ],
)
def test_bad_tokens_are_explained(tiny_model, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tiny_model(bad)


def test_text_input_without_tokenizer_is_explained(tiny_model):
    with pytest.raises(RuntimeError, match="no tokenizer is attached"):
        tiny_model("def f():")


def test_hooks_added_after_compile_are_refused(tiny_model, tokens):
    tiny_model.compile()
    tiny_model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: x * 2)
    with pytest.raises(RuntimeError, match="after model.compile"):
        tiny_model(tokens)


# ---------------------------------------------------------------- fused attention (the trainer's fast path)


def _logits_and_grads(model, tokens):
    model.zero_grad(set_to_none=True)
    logits = model(tokens)
    (logits.float() ** 2).mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_attention_equals_the_explicit_computation_and_the_reference_to_rounding(tokens):
    model = randomize(HookedSparseTransformer(tiny_config()))
    explicit, explicit_grads = _logits_and_grads(model, tokens)
    with model.fused_attention():
        assert all(block.attn.fused for block in model.blocks)
        fused, fused_grads = _logits_and_grads(model, tokens)
    assert not any(block.attn.fused for block in model.blocks)  # off again after the block
    assert not torch.equal(fused, explicit)  # a different kernel really ran
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    beeg, sd = ref.export_to_released(model)
    torch.testing.assert_close(fused, ref.forward(sd, beeg, tokens, eps=model.cfg.eps), rtol=1e-4, atol=1e-4)
    assert fused_grads.keys() == explicit_grads.keys()
    for name in explicit_grads:
        torch.testing.assert_close(fused_grads[name], explicit_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("kind", ["hook_pattern", "hook_attn_scores"])
def test_a_hook_on_the_pattern_or_scores_brings_the_explicit_computation_back(tokens, kind):
    model = randomize(HookedSparseTransformer(tiny_config()))
    seen = []
    halve = lambda act, hook: seen.append(hook.name) or act * 0.5  # noqa: E731
    hooks = [(f"blocks.{layer}.attn.{kind}", halve) for layer in range(model.cfg.n_layers)]
    want = model.run_with_hooks(tokens, fwd_hooks=hooks)
    with model.fused_attention():
        got = model.run_with_hooks(tokens, fwd_hooks=hooks)
        _, cache = model.run_with_cache(tokens)
    assert torch.equal(got, want) and len(seen) == 2 * model.cfg.n_layers  # every edit honoured, bit for bit
    assert torch.equal(cache["pattern", 0], model.run_with_cache(tokens)[1]["pattern", 0])
    grads = []
    with model.fused_attention():  # a backward hook alone also needs the pattern
        model.add_hook("blocks.0.attn.hook_pattern", lambda grad, hook: grads.append(grad.shape), dir="bwd")
        model(tokens).sum().backward()
        model.reset_hooks()
    assert grads == [torch.Size([tokens.shape[0], model.cfg.n_heads, tokens.shape[1], tokens.shape[1]])]


def test_fused_attention_leaves_sink_models_and_exceptions_alone(tokens):
    model = randomize(HookedSparseTransformer(tiny_config(attn_sink=True)))
    plain = model(tokens)
    with model.fused_attention():
        assert torch.equal(model(tokens), plain)  # a sink joins the softmax: the explicit path, exactly
    with pytest.raises(RuntimeError, match="boom"), model.fused_attention():
        raise RuntimeError("boom")
    assert not any(block.attn.fused for block in model.blocks)


# ---------------------------------------------------------------- the loss


def test_next_token_loss_and_its_gradient_match_torch_cross_entropy():
    from sparselens.model.cross_entropy import cross_entropy_per_row

    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(40, 50, generator=gen, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 50, (40,), generator=gen)
    targets[::7] = -100  # ignored rows: no loss, no gradient
    weights = torch.randn(40, generator=gen, dtype=torch.float64)
    got = cross_entropy_per_row(logits, targets)
    (got * weights).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    want = F.cross_entropy(logits, targets, reduction="none")
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want.float())
    torch.testing.assert_close(ours.float(), logits.grad.float())  # computed in fp32, cast back to the input dtype
    assert not ours[targets == -100].any()
    half = logits.detach().bfloat16().requires_grad_()
    cross_entropy_per_row(half, targets).sum().backward()
    assert half.grad.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="targets"):
        cross_entropy_per_row(logits, targets[:-1])


def test_model_loss_is_the_mean_cross_entropy_of_each_next_token(tokens):
    model = randomize(HookedSparseTransformer(tiny_config()))
    logits, loss = model(tokens, return_type="both")
    want = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, want)
