"""The model against the independent forward of tests/nanogpt_reference.py, beyond the logits.

For configurations the default fixtures do not reach (``n_heads * d_head != d_model``, ReLU, no
biases, no activation sparsity) the logits and every intermediate the reference computes itself
(q, k, v, attention scores with their -inf mask, pattern, sink share, z, MLP pre-activation and
post-activation, the sublayer outputs and residuals) are compared with the model's hook values.
"""

import nanogpt_reference as ref
import pytest
import torch
from conftest import randomize, tiny_config

from sparselens import HookedSparseTransformer

CONFIGS = {
    "narrow heads (2 x 16 < d_model 64), sink, bigram, pos": dict(
        n_heads=2, d_head=16, attn_sink=True, bigram_table=True, positional_embedding_type="learned"
    ),
    "wide heads (6 x 16 > d_model 64)": dict(n_heads=6, d_head=16),
    "odd heads (3 x 8), relu": dict(n_heads=3, d_head=8, act_fn="relu"),
    "relu, sink": dict(act_fn="relu", attn_sink=True),
    "no bias": dict(use_bias=False),
    "no bias, relu, narrow heads, sink": dict(use_bias=False, act_fn="relu", n_heads=2, d_head=16, attn_sink=True),
    "no activation sparsity, relu": dict(afrac=None, act_fn="relu", n_heads=2),
}

# reference cache name -> the model's hook name inside block l
HOOKS = {
    "attn_in": "hook_attn_in",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "scores": "attn.hook_attn_scores",
    "weights": "attn.hook_pattern",
    "sink": "attn.hook_sink",
    "z": "attn.hook_z",
    "attn_out": "hook_attn_out",
    "mlp_in": "hook_mlp_in",
    "mlp_pre": "mlp.hook_pre",
    "mlp_post": "mlp.hook_post",
    "mlp_out": "hook_mlp_out",
    "resid_post": "hook_resid_post",
}


def _model(**overrides) -> HookedSparseTransformer:
    return randomize(HookedSparseTransformer(tiny_config(**overrides))).eval()


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def config_case(request):
    return CONFIGS[request.param]


def test_config_cases_are_what_they_claim(config_case):
    cfg = _model(**config_case).cfg
    assert cfg.d_model == 64
    for key, value in config_case.items():
        assert getattr(cfg, key) == value, key
    if not cfg.use_bias:
        model = _model(**config_case)
        linear_biases = [n for n, p in model.named_parameters() if n.endswith(".bias")]
        assert linear_biases == [], linear_biases


def test_logits_and_intermediates_match_independent_forward(config_case, tokens):
    model = _model(**config_case)
    beeg, sd = ref.export_to_released(model)
    ref_cache: dict = {}
    expected = ref.forward(sd, beeg, tokens, eps=model.cfg.eps, cache=ref_cache)
    logits, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)

    compared = set()
    for (layer, name), want in ref_cache.items():
        hook = f"blocks.{layer}.{HOOKS[name]}"
        got = cache[hook]
        assert got.shape == want.shape, (hook, got.shape, want.shape)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=lambda m, h=hook: f"{h}: {m}")
        compared.add(name)
    expected_names = set(HOOKS) - ({"sink"} if not model.cfg.attn_sink else set())
    assert compared == expected_names

    for layer in range(model.cfg.n_layers):
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"]
        future = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).triu(1)
        # masked entries are stored as -inf (as in the reference), and only those
        assert bool(torch.isneginf(scores[..., future]).all())
        assert bool(torch.isfinite(scores[..., ~future]).all())
        assert bool((cache[f"blocks.{layer}.attn.hook_pattern"][..., future] == 0).all())


def test_relu_and_gelu_models_differ(tokens):
    """The activation really is switched (the reference follows activation_type, not a default)."""
    gelu = _model(n_heads=2, afrac=None)  # no AbsTopK: GELU's small negative outputs stay visible
    relu = _model(n_heads=2, afrac=None, act_fn="relu")
    relu.load_state_dict(gelu.state_dict())
    _, gelu_cache = gelu.run_with_cache(tokens)
    _, relu_cache = relu.run_with_cache(tokens)
    pre = relu_cache["blocks.0.mlp.hook_pre"]
    assert torch.equal(gelu_cache["blocks.0.mlp.hook_pre"], pre)
    assert torch.equal(relu_cache["blocks.0.mlp.hook_post"], pre.clamp_min(0))
    assert bool((gelu_cache["blocks.0.mlp.hook_post"] < 0).any())


def test_bias_views_without_biases_are_zeros_of_the_weight_dtype():
    """With ``use_bias=False`` the TransformerLens bias views are zeros in the weights' dtype (the
    MLP's used to be float32 zeros in a bfloat16 model)."""
    model = HookedSparseTransformer(tiny_config(use_bias=False, dtype=torch.bfloat16))
    for name in ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out"):
        bias = getattr(model, name)
        assert bias.dtype == torch.bfloat16 and not bool(bias.any()), name
