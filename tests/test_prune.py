"""Pruning: mask hooks are exact when everything is kept, the STE gradient, prune() end to end, the
reference run computed once, resample ablation and frozen norms against independent computations,
edges kind by kind against independent loops, sweeps that skip unreachable targets, and Circuit save/load."""

import json
import sys

import pytest
import torch
from conftest import randomize, tiny_config

from sparselens import Circuit, HookedSparseTransformer, NodeMask, prune
from sparselens.interventions import ReferenceRun, ablation_hooks
from sparselens.prune import (
    EDGE_KINDS,
    EdgeUse,
    LearnedMask,
    PruneConfig,
    circuit_edges,
    circuit_hooks,
    count_edges,
    count_residual_links,
    prune_sweep,
)

FAST = dict(steps=25, batch_size=16, eval_pairs=32, train_pairs=256, k_coef=1e-3, lr=3e-2)


@pytest.fixture(scope="module")
def trained(trained_on_quotes):
    return trained_on_quotes


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
@pytest.mark.parametrize("freeze", [False, True])
def test_learned_mask_with_every_node_kept_is_exact(trained, ablation, freeze):
    model, task, means = trained
    batch = task.batch(n=8, split="val")
    masks = LearnedMask(model.node_registry).masks()  # init bias 0.1: all kept
    assert all(bool((m == 1).all()) for m in masks.values())
    hooks = circuit_hooks(model, masks, ablation, ReferenceRun.of(model, batch), means, freeze)
    assert torch.equal(model.run_with_hooks(batch.tokens, fwd_hooks=hooks), model(batch.tokens))


def test_straight_through_gradient_is_the_sigmoid_derivative(tiny_model):
    learned = LearnedMask(tiny_model.node_registry, init_noise=0.5, temperature=0.7,
                          generator=torch.Generator().manual_seed(0))
    masks = learned.masks()
    weights = {name: torch.randn(m.shape) for name, m in masks.items()}
    sum(((m * weights[name]).sum() for name, m in masks.items())).backward()
    for name, tau in learned.tau.items():
        s = torch.sigmoid(tau.detach() / 0.7)
        torch.testing.assert_close(tau.grad, weights[name] * s * (1 - s) / 0.7)
        assert torch.equal(masks[name].detach(), (tau.detach() >= 0).float())


def test_prune_end_to_end(trained, tmp_path):
    model, task, means = trained
    config = PruneConfig(ablation="mean", **FAST)
    circuit = prune(model, task, 0.3, config, means=means, progress=False)
    assert circuit.losses["circuit_val"] <= 0.3
    assert 0 < circuit.n_nodes < model.node_registry.n_nodes
    assert circuit.losses["empty"] > circuit.losses["circuit"]
    assert circuit.config == config.to_dict() and [p[0] for p in circuit.curve] == [1, 11, 21, 25]
    # one evaluation path: the reported test loss is circuit.evaluate's default, and running the hooks yourself
    assert circuit.evaluate(model, task) == circuit.losses["circuit"]
    batch = task.batch(n=32, split="test", seed=0)
    with torch.no_grad():
        by_hand = task.loss_from_logits(model.run_with_hooks(batch.tokens, fwd_hooks=circuit.hooks(model)), batch)
    assert float(by_hand) == pytest.approx(circuit.losses["circuit"], abs=1e-6)
    # deterministic for a seed on CPU
    assert prune(model, task, 0.3, config, means=means, progress=False).kept == circuit.kept
    loaded = Circuit.load(circuit.save(tmp_path / "c.json"))
    assert loaded == circuit
    assert loaded.evaluate(model, task) == circuit.losses["circuit"]


@pytest.mark.parametrize("options", [dict(ablation="zero"), dict(ablation="resample", freeze_norms=True)])
def test_prune_other_ablations(trained, options):
    model, task, _ = trained
    circuit = prune(model, task, 0.3, PruneConfig(**{**FAST, "steps": 10}, **options), progress=False)
    assert circuit.losses["circuit_val"] <= 0.3 and circuit.ablation == options["ablation"]
    assert circuit.evaluate(model, task) == pytest.approx(circuit.losses["circuit"], abs=1e-6)


@pytest.mark.parametrize("ablation, freeze", [("zero", False), ("resample", True)])
def test_the_reference_run_is_computed_once_per_batch(trained, monkeypatch, ablation, freeze):
    """Bisection and scoring reuse one reference run per batch; mask learning builds one per step only
    when the ablation needs it. The reference is the only caller of run_with_cache."""
    model, task, _ = trained
    built, cached = [], []
    original_of, original_cache = ReferenceRun.of.__func__, type(model).run_with_cache

    def counting_of(cls, m, batch, *args, **kwargs):
        built.append(hash(batch.tokens.numpy().tobytes()))
        return original_of(cls, m, batch, *args, **kwargs)

    def counting_cache(self, *args, **kwargs):
        cached.append(1)
        return original_cache(self, *args, **kwargs)

    monkeypatch.setattr(ReferenceRun, "of", classmethod(counting_of))
    monkeypatch.setattr(type(model), "run_with_cache", counting_cache)
    config = PruneConfig(ablation=ablation, freeze_norms=freeze, **{**FAST, "steps": 4})
    prune_sweep(model, task, [0.2, 0.3, 0.45], config, progress=False)
    per_step = 4 if (ablation == "resample" or freeze) else 0
    assert len(built) == 2 + per_step == len(cached)  # validation and test batches, once each
    assert len(set(built)) == len(built)  # never twice for the same batch


def test_resample_takes_the_other_answer_aligned_at_the_read_position(trained):
    model, task, _ = trained
    batch = task.batch(n=6, split="val", seed=3)
    assert len(set(batch.read_pos.tolist())) > 1  # prompts of different lengths, right-padded
    ref = ReferenceRun.of(model, batch)
    rows, positions = ref.resample_index()
    for row in range(12):
        src = int(rows[row])
        assert (src < 6) != (row < 6), "the source is a prompt of the other half (the other answer)"
        assert batch.correct[src] != batch.correct[row]
        assert int(positions[row, batch.read_pos[row]]) == int(batch.read_pos[src])
    # independently: the replacement at the read position is the source prompt's own activation, from a
    # forward on that prompt alone (no padding, no batch)
    site = model.node_registry.at(0, "neuron")
    drop_all = NodeMask.full(model.node_registry).drop([site.node(i) for i in range(site.n_nodes)])
    seen = {}
    hooks = circuit_hooks(model, drop_all, "resample", ref) + [(site.hook_name, lambda x, hook: seen.setdefault("x", x.clone()))]
    model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
    for row in range(12):
        src = int(rows[row])
        alone = batch.tokens[src, : batch.read_pos[src] + 1][None]
        _, cache = model.run_with_cache(alone, names_filter=site.hook_name)
        torch.testing.assert_close(seen["x"][row, batch.read_pos[row]], cache[site.hook_name][0, -1], atol=1e-5, rtol=1e-5)


def test_frozen_norms_use_the_full_models_scale(trained):
    """Checked by hand: in the pruned run every norm divides by the full model's RMS of its own
    residual stream (computed here from the full model's cached residuals, not from the reference)."""
    model, task, means = trained
    batch = task.batch(n=4, split="val")
    mask = NodeMask.full(model.node_registry).drop([f"L0.neuron[{i}]" for i in range(40)] + [f"L0.attn_out[{i}]" for i in range(8)])
    pruned = {}

    def keep(name):
        return lambda x, hook: pruned.setdefault(name, x.clone())

    hooks = circuit_hooks(model, mask, "mean", ReferenceRun.of(model, batch), means, freeze_norms=True)
    names = ["blocks.0.hook_resid_mid", "blocks.0.ln2.hook_normalized", "blocks.0.hook_resid_post", "ln_final.hook_normalized"]
    model.run_with_hooks(batch.tokens, fwd_hooks=hooks + [(n, keep(n)) for n in names])
    _, full = model.run_with_cache(batch.tokens)
    for resid, normed, norm in (("blocks.0.hook_resid_mid", "blocks.0.ln2.hook_normalized", model.blocks[0].ln2),
                                ("blocks.0.hook_resid_post", "ln_final.hook_normalized", model.ln_final)):
        scale = (full[resid].pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
        assert not torch.allclose(pruned[resid], full[resid])  # the pruned residual really differs
        torch.testing.assert_close(pruned[normed], pruned[resid] / scale * norm.w, atol=1e-5, rtol=1e-5)


def _sparse_model(**overrides) -> HookedSparseTransformer:
    model = randomize(HookedSparseTransformer(tiny_config(n_layers=2, d_model=16, d_head=4, d_mlp=16, d_vocab=12, **overrides)))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weight-sparse, like the models this counts for (norm gains too, some)
        for p in model.parameters():
            p.mul_(torch.rand(p.shape, generator=gen) < 0.5)
    return model


@pytest.mark.parametrize("extras", [{}, dict(positional_embedding_type="learned", bigram_table=True)])
def test_edges_kind_by_kind_match_independent_loops(extras):
    model = _sparse_model(**extras)
    gen = torch.Generator().manual_seed(1)
    keep = {s.name: torch.rand(s.n_nodes, generator=gen) < 0.5 for s in model.node_sites}
    mask = NodeMask(model.node_registry, keep)
    use = EdgeUse(input_ids=(0, 2, 5, 11), target_ids=(3, 7), n_positions=6)
    counts = count_edges(model, mask, use)

    def k(site, i):
        return bool(keep[site][i])

    want = dict.fromkeys(EDGE_KINDS, 0)
    for l, b in enumerate(model.blocks):
        for name, w in (("attn_in->q", b.attn.q_proj.weight), ("attn_in->k", b.attn.k_proj.weight), ("attn_in->v", b.attn.v_proj.weight)):
            want[name] += sum(int(w[j, i] != 0 and k(f"L{l}.{name[-1]}", j) and k(f"L{l}.attn_in", i)) for j in range(16) for i in range(16))
        want["v->attn_out"] += sum(int(b.attn.o_proj.weight[o, j] != 0 and k(f"L{l}.v", j) and k(f"L{l}.attn_out", o))
                                   for o in range(16) for j in range(16))
        want["mlp_in->neuron"] += sum(int(b.mlp.fc_in.weight[j, i] != 0 and k(f"L{l}.neuron", j) and k(f"L{l}.mlp_in", i))
                                      for j in range(16) for i in range(16))
        want["neuron->mlp_out"] += sum(int(b.mlp.fc_out.weight[o, j] != 0 and k(f"L{l}.mlp_out", o) and k(f"L{l}.neuron", j))
                                       for o in range(16) for j in range(16))
        want["q-k"] += sum(int(k(f"L{l}.q", c) and k(f"L{l}.k", c)) for c in range(16))  # same head, same channel
        for read, norm in (("attn_in", b.ln1), ("mlp_in", b.ln2)):
            for c in range(16):
                if k(f"L{l}.{read}", c) and norm.w[c] != 0:
                    want["embed->read"] += sum(int(model.W_E[t, c] != 0) for t in use.input_ids)
                    if extras:
                        want["pos->read"] += sum(int(model.W_pos[p, c] != 0) for p in range(use.n_positions))
        for write in ("attn_out", "mlp_out"):
            for c in range(16):
                if k(f"L{l}.{write}", c) and model.ln_final.w[c] != 0:
                    want["write->unembed"] += sum(int(model.W_U[c, t] != 0) for t in use.target_ids)
    if extras:
        want["bigram"] = sum(int(model.bigram.table[a, t] != 0) for a in use.input_ids for t in use.target_ids)
    assert counts == want
    assert all(v > 0 for kind, v in want.items() if extras or kind not in ("pos->read", "bigram"))

    links = 0  # residual identity links: a kept write and a kept read of the same channel later on
    writes = []
    for l, b in enumerate(model.blocks):
        for read, norm, write in (("attn_in", b.ln1, "attn_out"), ("mlp_in", b.ln2, "mlp_out")):
            links += sum(int(k(f"L{l}.{read}", c) and norm.w[c] != 0 and k(w, c)) for w in writes for c in range(16))
            writes.append(f"L{l}.{write}")
    assert count_residual_links(model, mask) == links > 0

    edges = circuit_edges(model, mask, use)
    assert {kind: sum(e.kind == kind for e in edges) for kind in counts} == counts
    assert all(e.weight != 0 for e in edges) and len({(e.kind, e.src, e.dst) for e in edges}) == len(edges)
    qk = [e for e in edges if e.kind == "q-k"]
    assert all(e.src.replace(".k[", ".q[") == e.dst for e in qk)
    assert count_edges(model, NodeMask.full(model.node_registry, keep=False), use)["attn_in->q"] == 0


def test_sweep_skips_unreachable_targets_with_a_note(trained, capsys):
    model, task, means = trained
    model_loss = float(task.loss(model, task.batch(n=32, split="val")))
    config = PruneConfig(ablation="zero", **{**FAST, "steps": 3})
    circuits = prune_sweep(model, task, [model_loss / 10, 0.3], config)
    assert [c.losses["target"] for c in circuits] == [0.3]
    assert f"target {model_loss / 10} skipped: the full model reaches" in capsys.readouterr().err
    with pytest.raises(ValueError, match="skipped: the full model reaches"):
        prune(model, task, model_loss / 10, config, progress=False)


def test_hostile_callers(trained, tmp_path):
    model, task, means = trained
    with pytest.raises(ValueError, match="unknown ablation 'meen'.*did you mean 'mean'"):
        PruneConfig(ablation="meen")
    with pytest.raises(ValueError, match="unknown PruneConfig field.*did you mean 'steps'"):
        PruneConfig.from_dict({"step": 3})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        PruneConfig(batch_size=0)
    with pytest.raises(ValueError, match="pretraining corpus is unknown"):  # no silent default corpus
        prune(model, task, 0.3, PruneConfig(steps=1), progress=False)
    untrained = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=256, d_vocab=2048))
    with pytest.raises(ValueError, match="the full model reaches 0.6"):  # a model that cannot do the task
        prune(untrained, task, 0.3, PruneConfig(ablation="zero", steps=1, eval_pairs=32), progress=False)
    with pytest.raises(ValueError, match="need reference=ReferenceRun"):
        circuit_hooks(model, NodeMask.full(model.node_registry), "zero", freeze_norms=True)

    circuit = prune(model, task, 0.3, PruneConfig(ablation="zero", **{**FAST, "steps": 3}), progress=False)
    with pytest.raises(ValueError, match="different model"):
        circuit.hooks(untrained)
    path = circuit.save(tmp_path / "c.json")
    data = json.loads(path.read_text())
    for change, message in (({"version": 1}, "schema version 1.*Re-prune"), ({"kept": None, "edge_count": 3}, "unknown \\['edge_count'\\]")):
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(ValueError, match=message):
            Circuit.load(path)
    path.write_text('{"schema": "sparselens.circ')
    with pytest.raises(ValueError, match="not valid JSON"):
        Circuit.load(path)
    with pytest.raises(FileNotFoundError, match="no circuit file"):
        Circuit.load(tmp_path / "missing.json")


def test_interpolation_between_the_node_and_its_ablation(any_model, tokens):
    """``r * x + (1 - r) * A(x)`` for dropped nodes: r = 0 is the plain ablation, r = 1 the model."""
    model = any_model
    site = model.node_registry.at(1, "neuron")
    mask = NodeMask.full(model.node_registry).drop([site.node(i) for i in range(0, site.n_nodes, 2)])
    means = {s.hook_name: torch.randn(s.channel_shape) for s in model.node_sites}
    zeros = {s.name: torch.zeros(s.n_nodes) for s in model.node_sites}
    ones = {s.name: torch.ones(s.n_nodes) for s in model.node_sites}
    plain = model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, mask, "mean", means=means))
    torch.testing.assert_close(model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, mask, "mean", means=means, interpolation=zeros)), plain)
    torch.testing.assert_close(model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, mask, "mean", means=means, interpolation=ones)), model(tokens))  # noqa: E501
    r = {s.name: torch.rand(tokens.shape[0], s.n_nodes, generator=torch.Generator().manual_seed(2)) for s in model.node_sites}
    seen = {}
    hooks = ablation_hooks(model, mask, "mean", means=means, interpolation=r)
    _, full = model.run_with_cache(tokens, names_filter=site.hook_name)
    model.run_with_hooks(tokens, fwd_hooks=hooks + [(site.hook_name, lambda x, hook: seen.setdefault("x", x.clone()))])
    x = full[site.hook_name]  # nothing upstream of the layer-1 neurons is dropped: their input is the model's
    keep = mask[site].float()
    rr = r[site.name][:, None, :]
    eff = keep + (1 - keep) * rr
    torch.testing.assert_close(seen["x"], eff * x + (1 - eff) * means[site.hook_name], atol=1e-5, rtol=1e-5)


def test_prune_cli_sweep_writes_circuits_table_and_plot(trained, tmp_path, capsys):
    from sparselens.cli import main

    model, task, _ = trained
    model.save_pretrained(tmp_path / "model")
    args = ["prune", "--model", str(tmp_path / "model"), "--task", task.name, "--targets", "0.3,0.2,0.0001",
            "--ablation", "zero", "--steps", "5", "--batch-size", "8", "--train-pairs", "64", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "target 0.0001 skipped" in captured.err
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{task.name}-zero-seed0-sweep.html", f"{task.name}-zero-seed0-target0.2.json",
                     f"{task.name}-zero-seed0-target0.3.json"]
    circuits = [Circuit.load(tmp_path / "out" / f) for f in files[1:]]
    assert circuits[0].n_nodes >= circuits[1].n_nodes  # a lower target needs at least as many nodes
    for c in circuits:
        assert f"{c.losses['target']:>8.3f}{c.n_nodes:>8}{c.n_edges:>9}" in captured.out
    assert main([*args[:5], "--targets", "0.3", *args[7:-1], str(tmp_path / "json"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (row,) = printed["circuits"]
    saved = Circuit.load(row["file"])
    assert (row["n_nodes"], row["n_edges"], row["losses"]["circuit"]) == (saved.n_nodes, saved.n_edges, saved.losses["circuit"])
    assert printed["split"] == "test" and printed["task"] == task.name and printed["ablation"] == "zero"
    assert main(["prune", "--model", str(tmp_path / "model"), "--task", "no_such_task"]) == 2
    assert main(["prune", "--model", str(tmp_path / "model"), "--task", task.name, "--targets", "0.1,x"]) == 2


def test_compare_report_tables_follow_the_circuits(trained, tmp_path):
    from types import SimpleNamespace

    from sparselens.prune.compare import VARIANTS, write_report

    model, task, means = trained
    circuits = {v: prune(model, task, 0.3, PruneConfig(ablation=a, freeze_norms=f, **{**FAST, "steps": 3}), means=means,
                         progress=False) for v, (_, a, f) in VARIANTS.items()}
    results = {(task.name, v, 0): c for v, c in circuits.items()}
    args = SimpleNamespace(sparse="s", dense="d", target=0.3, steps=3, batch_size=8)
    losses = {"sparse": {task.name: (0.01, 1.5)}, "dense": {task.name: (0.02, 1.25)}}
    report = write_report(results, {}, [task.name], [0], losses, args, tmp_path, degenerate=["with_as"]).read_text()
    assert (tmp_path / "comparisons.png").exists() and (tmp_path / "comparisons_curves.png").exists()
    assert "Skipped as degenerate" in report and "with_as" in report
    dense, sparse = circuits["dense, mean"], circuits["sparse, mean"]
    ratio = dense.n_edges / max(sparse.n_edges, 1)
    assert f"{dense.n_nodes} / {dense.n_edges} vs {sparse.n_nodes} / {sparse.n_edges} ({ratio:.2f}x edges)" in report
    assert "1 tasks x 1 seed(s)" in report and f"| {task.name} | 0.0100 | 0.0200 | 1.5000 | 1.2500 |" in report
    assert f"over 1 tasks: **{ratio:.2f}x**" in report
    results[(task.name, "dense, mean", 0)] = SimpleNamespace(n_nodes=0, n_edges=0, losses=dense.losses)
    assert "an empty circuit already reaches the target" in write_report(results, {}, [task.name], [0], losses, args, tmp_path).read_text()


def test_compare_reuses_a_saved_circuit_only_when_it_matches(trained, tmp_path, monkeypatch):
    from sparselens.model.fingerprint import model_fingerprint
    from sparselens.prune import compare

    model, task, means = trained
    config = PruneConfig(ablation="mean", **{**FAST, "steps": 3})
    path = compare.circuit_path(tmp_path, task.name, "sparse, mean", 0)
    fp = model_fingerprint(model)
    first, reused, error = compare.saved_or_pruned(model, task, 0.3, config, means, path, fp)
    assert not reused and error is None and path.exists()  # saved at once, before any report
    calls = []
    monkeypatch.setattr(sys.modules["sparselens.prune"], "prune", lambda *a, **k: calls.append(a) or first)
    again, reused, _ = compare.saved_or_pruned(model, task, 0.3, config, means, path, fp)
    assert reused and not calls and again.kept == first.kept
    # another target, another config or another model: pruned again
    for target, cfg, fingerprint in [(0.25, config, fp), (0.3, PruneConfig(ablation="mean", **{**FAST, "steps": 4}), fp),
                                     (0.3, config, "0" * len(fp))]:
        _, reused, _ = compare.saved_or_pruned(model, task, target, cfg, means, path, fingerprint)
        assert not reused
    assert len(calls) == 3
    path.write_text("{not json")  # a corrupt file is pruned again, not a crash
    assert compare.saved_or_pruned(model, task, 0.3, config, means, path, fp)[1] is False
