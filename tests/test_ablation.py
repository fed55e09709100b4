"""Ablation hooks: exactness with every node kept, locality, and each replacement's value."""

import pytest
import torch
from conftest import tiny_config

from sparselens import HookedSparseTransformer, NodeMask
from sparselens.interventions import ablation_hooks, compute_means, freeze_norm_hooks


@pytest.fixture
def setup(any_model, tokens):
    other = torch.randint(0, 128, tokens.shape, generator=torch.Generator().manual_seed(9))
    means = compute_means(any_model, [other, tokens], progress=False)
    _, resample_cache = any_model.run_with_cache(other)
    return any_model, tokens, means, resample_cache


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
@pytest.mark.parametrize("freeze", [False, True])
def test_all_nodes_kept_is_bit_identical(setup, ablation, freeze):
    model, tokens, means, resample_cache = setup
    plain, cache = model.run_with_cache(tokens)
    hooks = ablation_hooks(model, NodeMask.full(model.node_registry), ablation, means=means, resample_cache=resample_cache)
    if freeze:
        hooks += freeze_norm_hooks(cache)
    assert len(hooks) >= len(model.node_sites)
    assert torch.equal(model.run_with_hooks(tokens, fwd_hooks=hooks), plain)


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_ablating_a_node_changes_its_readers_and_nothing_upstream(setup, ablation):
    model, tokens, means, resample_cache = setup
    _, clean = model.run_with_cache(tokens)
    neuron = int(clean["post", 1][0, -1].abs().argmax())  # an active neuron of layer 1
    mask = NodeMask.full(model.node_registry).drop([f"L1.neuron[{neuron}]"])
    hooks = ablation_hooks(model, mask, ablation, means=means, resample_cache=resample_cache)
    with model.hooks(fwd_hooks=hooks):
        _, ablated = model.run_with_cache(tokens)

    order = list(clean.keys())
    site_index = order.index("blocks.1.mlp.hook_post")
    for name in order[:site_index]:
        assert torch.equal(ablated[name], clean[name]), f"{name} is upstream of the ablated node but changed"
    post = ablated["post", 1]
    others = torch.ones(post.shape[-1], dtype=torch.bool)
    others[neuron] = False
    assert torch.equal(post[..., others], clean["post", 1][..., others])
    expected = {"zero": torch.zeros_like(post[..., neuron]),
                "mean": means["blocks.1.mlp.hook_post"][neuron].expand_as(post[..., neuron]),
                "resample": resample_cache["post", 1][..., neuron]}[ablation]
    torch.testing.assert_close(post[..., neuron], expected)
    assert not torch.equal(ablated["mlp_out", 1], clean["mlp_out", 1]), "the MLP output reads the neuron"


def test_mean_ablating_a_whole_site_writes_the_mean_everywhere(setup):
    model, tokens, means, _ = setup
    mask = NodeMask.full(model.node_registry)
    mask = NodeMask(model.node_registry, {**mask.keep, "L0.q": torch.zeros(model.cfg.d_qkv, dtype=torch.bool)})
    with model.hooks(fwd_hooks=ablation_hooks(model, mask, "mean", means=means)):
        _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["q", 0], means["blocks.0.attn.hook_q"].expand_as(cache["q", 0]))


def test_compute_means_matches_cache_average(tiny_model, tokens):
    halves = [tokens[:2], tokens[2:]]
    means = compute_means(tiny_model, halves, progress=False)
    _, cache = tiny_model.run_with_cache(tokens)
    for site in tiny_model.node_sites:
        torch.testing.assert_close(means[site.hook_name], cache[site.hook_name].mean(dim=(0, 1)))


def test_frozen_norms_patch_the_recorded_scale(tiny_model, tokens):
    other = tokens.flip(0)
    _, other_cache = tiny_model.run_with_cache(other)
    with tiny_model.hooks(fwd_hooks=freeze_norm_hooks(other_cache)):
        _, cache = tiny_model.run_with_cache(tokens)
    assert torch.equal(cache["blocks.0.ln1.hook_scale"], other_cache["blocks.0.ln1.hook_scale"])
    resid = cache["resid_pre", 0]
    torch.testing.assert_close(cache["blocks.0.ln1.hook_normalized"], resid / other_cache["blocks.0.ln1.hook_scale"] * tiny_model.blocks[0].ln1.w)


def test_hostile_inputs(tiny_model, tokens):
    full = NodeMask.full(tiny_model.node_registry)
    with pytest.raises(ValueError, match="did you mean 'zero'"):
        ablation_hooks(tiny_model, full, "zeros")
    with pytest.raises(ValueError, match="needs means="):
        ablation_hooks(tiny_model, full, "mean")
    with pytest.raises(ValueError, match="needs resample_cache="):
        ablation_hooks(tiny_model, full, "resample")
    _, short_cache = tiny_model.run_with_cache(tokens[:1])
    hooks = ablation_hooks(tiny_model, full, "resample", resample_cache=short_cache)
    with pytest.raises(ValueError, match="resample ablation at blocks.0.hook_attn_in.*from the same batch"):
        tiny_model.run_with_hooks(tokens, fwd_hooks=hooks)
    bad_means = {site.hook_name: torch.full(site.channel_shape, float("nan")) for site in tiny_model.node_sites}
    with pytest.raises(ValueError, match="NaN"):
        ablation_hooks(tiny_model, full, "mean", means=bad_means)
    other = HookedSparseTransformer(tiny_config(n_layers=1))
    with pytest.raises(ValueError, match="different model"):
        ablation_hooks(tiny_model, NodeMask.full(other.node_registry), "zero")
    with pytest.raises(ValueError, match="no '\\*.hook_scale' entries"):
        freeze_norm_hooks({})
