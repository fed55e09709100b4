"""Inline plots: the numbers embedded in each plot's HTML are the model's cached activations (checked
against independent runs), the sink column is hook_sink, circuits change what they should, the full
model runs once per plot, hostile inputs get clear errors, and every plot renders with circuitsvis's
JavaScript inlined (no network)."""

import html
import importlib.util
import json
import math
import re

import pytest
import torch
from conftest import randomize, tiny_config

import sparselens.viz as viz
from sparselens import HookedSparseTransformer, NodeMask
from sparselens.data import load_corpus, load_tokenizer
from sparselens.interventions import ReferenceRun
from sparselens.model.fingerprint import model_fingerprint
from sparselens.prune import Circuit, EdgeUse, count_edges, count_residual_links
from sparselens.viz import attention_patterns, circuit_size_plot, node_activations, top_activations, top_snippets
from sparselens.viz.attention import SINK_TOKEN
from sparselens.viz.plot import circuitsvis_bundle


def make_model(tok, **extra):
    cfg = tiny_config(n_layers=2, d_model=32, d_head=16, n_ctx=64, d_vocab=2048, **extra)
    return randomize(HookedSparseTransformer(cfg, tokenizer=tok).eval())


def make_circuit(model, drop, ablation="zero", losses=None):
    """A Circuit of ``model`` keeping every node except ``drop`` (no pruning run needed)."""
    mask = NodeMask.full(model.node_registry).drop(drop)
    return Circuit(
        kept={s.name: mask[s.name].nonzero().flatten().tolist() for s in model.node_sites},
        edge_counts=count_edges(model, mask, EdgeUse()), residual_links=count_residual_links(model, mask),
        task="single_double_quote", target_ids=(), input_ids=(), n_positions=0, ablation=ablation, freeze_norms=False,
        losses=losses or {"model": 0.1, "circuit": 0.2}, model_fingerprint=model_fingerprint(model),
    )


@pytest.fixture(scope="module")
def setup():
    """A random 2-layer model with an attention sink, a task batch, and a circuit with head L0H0's Q ablated."""
    from sparselens.tasks import get_task

    torch.manual_seed(0)
    tok = load_tokenizer()
    model = make_model(tok, attn_sink=True)
    batch = get_task("single_double_quote", tokenizer=tok).batch(n=2, split="test", seed=0)
    circuit = make_circuit(model, [f"L0.q[h0,{c}]" for c in range(16)] + ["L0.neuron[3]"])
    return model, batch, circuit


def mounted(text):
    """(element, props) of every circuitsvis element a plot's HTML renders, props parsed from the script."""
    return [(m[1], json.loads(m[2])) for m in
            re.finditer(r'^CircuitsVis\.render\("[\w-]+", CircuitsVis\.(\w+), (.*)\);$', text, flags=re.M)]


# ----------------------------------------------------------------------------------- attention
def test_attention_patterns_sink_column_and_circuit(setup):
    model, batch, circuit = setup
    row = 1
    plot = attention_patterns(model, batch, heads=[(0, 0), (1, 1)], circuit=circuit, prompt=row)
    (el_full, full), (el_circ, circ) = mounted(plot._repr_html_())
    assert el_full == el_circ == "AttentionHeads"
    n = int(batch.read_pos[row]) + 1
    assert full["tokens"] == circ["tokens"] == [SINK_TOKEN] + model.to_str_tokens(batch.tokens[row, :n])
    assert full["attentionHeadNames"] == ["L0H0", "L1H1"]

    _, cache = model.run_with_cache(batch.tokens)
    for i, (l, h) in enumerate([(0, 0), (1, 1)]):
        shown = torch.tensor(full["attention"][i])
        torch.testing.assert_close(shown[1:, 1:], cache[f"blocks.{l}.attn.hook_pattern"][row, h, :n, :n])
        torch.testing.assert_close(shown[1:, 0], cache[f"blocks.{l}.attn.hook_sink"][row, h, :n])
        torch.testing.assert_close(shown[1:].sum(-1), torch.ones(n))  # sink included, every query row sums to 1
        assert bool((shown[0] == 0).all())  # the sink is not a query
        assert float(shown[1:, 0].min()) > 0  # randomized sink logits: the sink takes a visible share

    # Q of L0H0 is zero-ablated: scores are all 0, so attention is uniform over the sink (weight
    # e^s) and the i+1 visible keys (weight 1 each)
    shown = torch.tensor(circ["attention"][0])
    e_s = math.exp(float(model.blocks[0].attn.sink_logit[0].detach()))
    for q in range(n):
        expected = torch.zeros(n + 1)
        expected[0], expected[1 : q + 2] = e_s / (e_s + q + 1), 1 / (e_s + q + 1)
        torch.testing.assert_close(shown[q + 1], expected)
    assert not torch.allclose(shown, torch.tensor(full["attention"][0]))
    torch.testing.assert_close(plot.data["circuit"], torch.tensor(circ["attention"]))
    assert "q 0/16, k 16/16, v 16/16" in plot.html  # kept channels of L0H0 in the circuit


def test_attention_patterns_without_sink_and_from_text():
    tok = load_tokenizer()
    model = make_model(tok)
    text = "def f(x):\n    return x"
    plot = attention_patterns(model, text, heads=(1, 0))
    ((element, props),) = mounted(plot.html)
    tokens = model.to_tokens(text)
    assert props["tokens"] == model.to_str_tokens(tokens[0]) and SINK_TOKEN not in props["tokens"]
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(torch.tensor(props["attention"][0]), cache["blocks.1.attn.hook_pattern"][0, 0])
    assert plot.data["circuit"] is None and "no attention sink" in plot.html


def test_attention_patterns_hostile_inputs(setup):
    model, batch, circuit = setup
    with pytest.raises(IndexError, match=r"head 2 is out of range; each layer has 2 heads \(0..1\)"):
        attention_patterns(model, batch, heads=[(0, 2)])
    with pytest.raises(IndexError, match=r"layer 5 is out of range; the model has 2 layers"):
        attention_patterns(model, batch, heads=[(5, 0)])
    with pytest.raises(TypeError, match="heads must be \\(layer, head\\) pairs"):
        attention_patterns(model, batch, heads=["L0H0"])
    with pytest.raises(ValueError, match="70 tokens exceed the model's context n_ctx=64"):
        attention_patterns(model, torch.zeros(70, dtype=torch.long), heads=[(0, 0)])
    with pytest.raises(TypeError, match="integer tensor"):
        attention_patterns(model, torch.zeros(5), heads=[(0, 0)])
    with pytest.raises(IndexError, match=r"prompt index 4 is out of range: there are 4 prompts"):
        attention_patterns(model, batch, heads=[(0, 0)], prompt=4)
    resample = make_circuit(model, ["L0.neuron[0]"], ablation="resample")
    with pytest.raises(ValueError, match="resample ablation.*pass a TaskBatch"):
        attention_patterns(model, batch.tokens, heads=[(0, 0)], circuit=resample)
    other = make_model(load_tokenizer(), attn_sink=True)
    torch.manual_seed(1)
    randomize(other, seed=7)
    with pytest.raises(ValueError, match="different model"):
        attention_patterns(other, batch, heads=[(0, 0)], circuit=circuit)


# ----------------------------------------------------------------------------------- node activations
def test_node_activations_full_and_circuit(setup):
    model, batch, circuit = setup
    nodes = ["L0.neuron[3]", "L1.q[h1,2]"]
    plot = node_activations(model, batch, nodes, circuit=circuit, prompts=[0, 3])
    shown = mounted(plot.html)
    assert [el for el, _ in shown] == ["ColoredTokensMulti"] * 2
    labels = ["L0.neuron[3] full", "L0.neuron[3] circuit (ablated)", "L1.q[h1,2] full", "L1.q[h1,2] circuit"]
    assert shown[0][1]["labels"] == labels

    # independent runs: plain cache, and the circuit's hooks plus a capture hook via run_with_hooks
    _, cache = model.run_with_cache(batch.tokens)
    captured = {}

    def capture(act, hook):
        captured[hook.name] = act.detach().clone()

    model.run_with_hooks(batch.tokens, fwd_hooks=circuit.hooks(model) + [
        ("blocks.0.mlp.hook_post", capture), ("blocks.1.attn.hook_q", capture)])
    for (_, props), row in zip(shown, [0, 3]):
        n = int(batch.read_pos[row]) + 1
        values = torch.tensor(props["values"])
        assert values.shape == (n, 4)
        torch.testing.assert_close(values[:, 0], cache["blocks.0.mlp.hook_post"][row, :n, 3])
        assert bool((values[:, 1] == 0).all())  # zero-ablated in the circuit
        torch.testing.assert_close(values[:, 1], captured["blocks.0.mlp.hook_post"][row, :n, 3])
        torch.testing.assert_close(values[:, 2], cache["blocks.1.attn.hook_q"][row, :n, 1, 2])
        torch.testing.assert_close(values[:, 3], captured["blocks.1.attn.hook_q"][row, :n, 1, 2])
        assert props["tokens"] == [html.escape(t, quote=False) for t in model.to_str_tokens(batch.tokens[row, :n])]
    # a node's full and circuit series share a colour scale
    bounds = shown[0][1]["positiveBounds"]
    assert bounds[0] == bounds[1] and bounds[2] == bounds[3]
    assert not torch.allclose(torch.tensor(shown[0][1]["values"])[:, 3], torch.tensor(shown[0][1]["values"])[:, 2])


def test_node_activations_escapes_token_html():
    tok = load_tokenizer()
    model = make_model(tok)
    text = "if a</script><b>:"
    plot = node_activations(model, text, ["L0.neuron[1]"])
    ((_, props),) = mounted(plot.html)
    assert "".join(props["tokens"]) == html.escape(text, quote=False)
    assert plot.html.count("</script") == 1  # the token text cannot close the script early


def test_node_activations_hostile_inputs(setup):
    model, batch, _ = setup
    with pytest.raises(KeyError, match="did you mean 'L0.neuron'"):
        node_activations(model, batch, ["L0.nueron[3]"])
    with pytest.raises(IndexError, match="has 128 nodes"):
        node_activations(model, batch, ["L0.neuron[500]"])
    with pytest.raises(IndexError, match="2 heads of 16 channels"):
        node_activations(model, batch, ["L0.q[h3,0]"])
    with pytest.raises(IndexError, match="prompt index -1 is out of range"):
        node_activations(model, batch, ["L0.neuron[1]"], prompts=[-1])


def test_resample_circuit_takes_its_replacements_from_the_reference_run(setup):
    model, batch, _ = setup
    resample = make_circuit(model, [f"L0.neuron[{i}]" for i in range(64)], ablation="resample")
    plot = node_activations(model, batch, ["L0.neuron[3]", "L1.neuron[0]"], circuit=resample)
    reference = ReferenceRun.of(model, batch)
    captured = {}

    def capture(act, hook):
        captured[hook.name] = act.detach().clone()

    model.run_with_hooks(batch.tokens, fwd_hooks=resample.hooks(model, reference) + [
        ("blocks.0.mlp.hook_post", capture), ("blocks.1.mlp.hook_post", capture)])
    replacement = reference.resampled()["blocks.0.mlp.hook_post"]
    for row, values in zip(plot.data["rows"], plot.data["values"]):
        n = int(batch.read_pos[row]) + 1
        torch.testing.assert_close(values[:, 1], replacement[row, :n, 3])  # dropped: the other prompt's activation
        torch.testing.assert_close(values[:, 3], captured["blocks.1.mlp.hook_post"][row, :n, 0])


def test_a_circuit_plot_runs_the_full_model_once(setup):
    model, batch, circuit = setup
    forwards = []
    handle = model.blocks[0].register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        node_activations(model, batch, ["L0.neuron[3]"], circuit=circuit)
        attention_patterns(model, batch, heads=[(0, 0)], circuit=circuit)
    finally:
        handle.remove()
    assert len(forwards) == 4  # per plot: the reference run and the circuit's run


# ----------------------------------------------------------------------------------- top snippets
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        (folder / f"m{i}.py").write_text(
            "".join(f"def f{i}_{j}(x, y={j}):\n    s = 'a' + \"b\"\n    return x < y and [x] * {i}\n" for j in range(12)))
    return load_corpus(folder, n_ctx=48, split="train", cache_dir=folder / "cache", progress=False)


@pytest.mark.parametrize("node", ["L0.neuron[5]", "L1.k[h0,3]"])
def test_top_snippets_are_the_top_activations(setup, corpus, node):
    model, _, _ = setup
    k, before, after = 6, 3, 2
    plot = top_snippets(model, node, corpus, k=k, window=(before, after), batch_size=5, progress=False)
    snippets = plot.data["snippets"]

    site_node = model.node_registry.node(node)
    _, cache = model.run_with_cache(corpus)  # all rows in one pass: an independent reference
    act = cache[site_node.site.hook_name]
    acts = act.reshape(*act.shape[:2], -1)[..., site_node.index]  # [row, pos]
    # ranked by |activation|, each row once at its peak
    peak_abs, peak_pos = acts.abs().max(dim=1)
    best_rows = peak_abs.sort(descending=True, stable=True).indices[:k]  # ties: the earlier row
    torch.testing.assert_close(snippets.values.abs(), peak_abs[best_rows])
    assert snippets.rows.tolist() == best_rows.tolist() and snippets.positions.tolist() == peak_pos[best_rows].tolist()
    assert len(set(snippets.rows.tolist())) == k
    shown = mounted(plot.html)
    assert len(shown) == k and all(el == "ColoredTokens" for el, _ in shown)
    for i in range(k):
        r, p = int(snippets.rows[i]), int(snippets.positions[i])
        lo, hi = max(0, p - before), min(corpus.shape[1], p + after + 1)
        torch.testing.assert_close(acts[r, p], snippets.values[i])
        torch.testing.assert_close(snippets.activations[i], acts[r, lo:hi])
        assert torch.equal(snippets.tokens[i], corpus[r, lo:hi])
        assert snippets.centers[i] == p - lo
        props = shown[i][1]
        torch.testing.assert_close(torch.tensor(props["values"]), acts[r, lo:hi])
        assert props["tokens"] == [html.escape(t, quote=False) for t in model.to_str_tokens(corpus[r, lo:hi])]
    assert snippets.n_tokens == corpus.numel()


def test_top_activations_of_many_nodes_in_one_pass(setup, corpus):
    model, _, _ = setup
    nodes = ["L0.neuron[5]", "L1.k[h0,3]", "L0.neuron[9]"]
    together = top_activations(model, nodes, corpus, k=4, batch_size=7, progress=False)
    assert list(together) == nodes
    for node in nodes:
        alone = top_activations(model, node, corpus, k=4, batch_size=5, progress=False)[node]
        torch.testing.assert_close(together[node].values, alone.values)
        assert together[node].rows.tolist() == alone.rows.tolist()
        assert all(torch.equal(a, b) for a, b in zip(together[node].tokens, alone.tokens))


def test_top_snippets_hostile_inputs(setup, corpus):
    model, _, _ = setup
    with pytest.raises(ValueError, match="more than the model's n_ctx=64; load them with load_corpus\\(n_ctx=64\\)"):
        top_activations(model, "L0.neuron[0]", torch.zeros(2, 65, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="k must be between 1"):
        top_activations(model, "L0.neuron[0]", corpus, k=0, progress=False)
    with pytest.raises(ValueError, match=f"number of corpus rows \\({corpus.shape[0]}; at most one snippet per row"):
        top_activations(model, "L0.neuron[0]", corpus, k=corpus.shape[0] + 1, progress=False)
    with pytest.raises(ValueError, match="integer tensor"):
        top_activations(model, "L0.neuron[0]", corpus.float(), progress=False)
    with pytest.raises(KeyError, match="did you mean"):
        top_snippets(model, "L0.neurons[0]", corpus, progress=False)


# ----------------------------------------------------------------------------------- circuit size
def test_circuit_size_plot(setup):
    model, _, _ = setup
    circuits = [make_circuit(model, [f"L0.neuron[{i}]" for i in range(d)],
                             losses={"model": 0.05, "circuit": 0.5 - d / 400, "target": 0.3}) for d in (10, 60, 120)]
    results = circuits + [{"n_nodes": 7, "n_edges": 20, "losses": {"circuit": 0.9}}, {"n_nodes": 3, "n_edges": 4, "losses": 1.4}]
    plot = circuit_size_plot(results)
    text = plot.html
    assert "<script" not in text and text.count("<svg") == 2
    expected = [(c.n_nodes, c.n_edges, c.losses["circuit"]) for c in circuits] + [(7, 20, 0.9), (3, 4, 1.4)]
    for axis in ("n_nodes", "n_edges"):
        svg = text[text.index(f'data-axis="{axis}"'):]
        svg = svg[: svg.index("</svg>")]
        points = [(int(a), int(b), float(c)) for a, b, c in
                  re.findall(r'data-n-nodes="(\d+)" data-n-edges="(\d+)" data-loss="([^"]+)"', svg)]
        assert points == expected
    assert "model 0.05" in text and "target 0.3" in text and "(log scale)" in text
    assert plot.data["n_nodes"] == [e[0] for e in expected]


def test_circuit_size_plot_hostile_inputs():
    with pytest.raises(ValueError, match="non-empty list"):
        circuit_size_plot([])
    with pytest.raises(ValueError, match=r"results\[1\] has no 'n_edges'"):
        circuit_size_plot([{"n_nodes": 1, "n_edges": 2, "losses": 1.0}, {"n_nodes": 1, "losses": 1.0}])
    with pytest.raises(KeyError, match="has no 'circuit_val'"):
        circuit_size_plot([{"n_nodes": 1, "n_edges": 2, "losses": {"circuit": 1.0}}], loss="circuit_val")
    with pytest.raises(ValueError, match="non-finite"):
        circuit_size_plot([{"n_nodes": 1, "n_edges": 2, "losses": float("nan")}])


# ----------------------------------------------------------------------------------- offline rendering
def all_plots(setup, corpus):
    model, batch, circuit = setup
    return {
        "attention": attention_patterns(model, batch, heads=[(0, 1)], circuit=circuit),
        "nodes": node_activations(model, batch, ["L0.neuron[3]"], circuit=circuit),
        "snippets": top_snippets(model, "L0.neuron[3]", corpus, k=3, progress=False),
        "size": circuit_size_plot([{"n_nodes": 5, "n_edges": 9, "losses": 0.3}]),
    }


def test_every_plot_renders_offline(setup, corpus, monkeypatch, tmp_path):
    # circuitsvis's RenderedHTML serves the CDN version when it thinks it is online: pretend it is
    import circuitsvis.utils.render as cv_render

    monkeypatch.setattr(cv_render, "internet_on", lambda: True)
    bundle = circuitsvis_bundle()
    assert "var CircuitsVis=" in bundle and "</script" not in bundle
    for name, plot in all_plots(setup, corpus).items():
        text = plot._repr_html_()
        assert text == plot.html == plot.__html__()
        assert not re.search(r"<script[^>]*\bsrc\s*=", text), name
        assert not re.search(r"""(import|from)\s*[^;]*["']https?://""", text), name
        assert "unpkg.com" not in text and "cdn.jsdelivr" not in text, name
        if name == "size":
            assert "<script" not in text  # pure inline SVG
        else:
            assert text.count(bundle) == 1 and text.count('<script type="module">') == 1, name
            assert text.count("</script") == 1 and "<!--" not in text, name  # nothing ends the script early
        saved = plot.save(tmp_path / f"{name}.html").read_text(encoding="utf-8")
        assert saved.startswith("<!DOCTYPE html>") and text in saved


def test_viz_package_exports_viewer_lazily():
    for name in ("attention_patterns", "node_activations", "top_activations", "top_snippets", "circuit_size_plot", "Plot"):
        assert name in viz.__all__ and callable(getattr(viz, name))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        viz.nope  # noqa: B018
    if importlib.util.find_spec("sparselens.viz.viewer") is None:
        with pytest.raises(ModuleNotFoundError):
            viz.write_viewer  # noqa: B018
    else:
        from sparselens.viz import viewer

        assert viz.write_viewer is viewer.write_viewer and viz.CircuitView is viewer.CircuitView
        assert viz.show_circuit is viewer.show_circuit
