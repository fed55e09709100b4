import pytest
import torch

from sparselens import NodeKind, NodeMask
from sparselens.errors import UnknownNameError


def test_eight_sites_per_layer_with_hooks_that_exist(tiny_model, tokens):
    sites = tiny_model.node_sites
    assert len(sites) == 8 * tiny_model.cfg.n_layers
    assert [s.kind for s in sites[:8]] == list(NodeKind)
    _, cache = tiny_model.run_with_cache(tokens)
    for site in sites:
        assert site.hook_name in tiny_model.hook_dict
        assert cache[site.hook_name].shape[2:] == site.channel_shape
        assert site.n_nodes == cache[site.hook_name][0, 0].numel()
    assert tiny_model.node_registry.n_nodes == sum(s.n_nodes for s in sites)


def test_every_node_name_parses_back(tiny_model):
    reg = tiny_model.node_registry
    names = [node.name for node in reg.nodes()]
    assert len(set(names)) == reg.n_nodes
    for node in reg.nodes():
        assert reg.node(node.name) == node


def test_node_names_are_readable(tiny_model):
    reg = tiny_model.node_registry
    q = reg.node("L1.q[h2,5]")
    assert (q.site.hook_name, q.index, q.head) == ("blocks.1.attn.hook_q", 2 * 16 + 5, 2)
    n = reg.node("L0.neuron[17]")
    assert (n.site.hook_name, n.index, n.head) == ("blocks.0.mlp.hook_post", 17, None)
    assert reg.site("blocks.0.hook_mlp_out").name == "L0.mlp_out"


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("L0.nueron[3]", UnknownNameError, "did you mean 'L0.neuron'"),
        ("L9.neuron[3]", UnknownNameError, "unknown node site"),
        ("L0.neuron[9999]", IndexError, "has 256 nodes"),
        ("L0.q[3]", ValueError, "name their head"),
        ("L0.q[h9,0]", IndexError, "4 heads"),
        ("L0.neuron[h1,2]", ValueError, "only Q/K/V"),
        ("neuron 3", UnknownNameError, "unknown node"),
    ],
)
def test_bad_node_names_are_explained(tiny_model, name, error, match):
    with pytest.raises(error, match=match):
        tiny_model.node_registry.node(name)


def test_node_mask_counts(tiny_model):
    reg = tiny_model.node_registry
    full = NodeMask.full(reg)
    assert full.n_kept == full.n_total == reg.n_nodes
    mask = full.drop(["L0.neuron[3]", "L1.q[h1,0]"])
    assert mask.n_kept == reg.n_nodes - 2 and full.n_kept == reg.n_nodes  # drop copies
    assert not bool(mask["L0.neuron"][3]) and not bool(mask["blocks.1.attn.hook_q"][16])
    kept = NodeMask.from_nodes(reg, ["L0.attn_in[1]", "L1.neuron[7]"])
    assert [n.name for n in kept.nodes()] == ["L0.attn_in[1]", "L1.neuron[7]"]
    assert kept.kept_per_site()["L1.neuron"] == 1
    with pytest.raises(ValueError, match="expected 256"):
        NodeMask(reg, {**full.keep, "L0.neuron": torch.ones(5, dtype=torch.bool)})
