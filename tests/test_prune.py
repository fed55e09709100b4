"""Pruning: mask hooks are exact when everything is kept, the STE gradient, prune() end to end,
edge counting against an independent count, and Circuit save/load."""

import json

import pytest
import torch

from conftest import tiny_config
from sparselens import Circuit, HookedSparseTransformer, NodeMask, prune
from sparselens.prune import LearnedMask, circuit_edges, circuit_hooks, count_edges


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
    hooks = circuit_hooks(model, masks, ablation, batch.tokens, means, freeze)
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
    kwargs = dict(target_loss=0.3, ablation="mean", means=means, steps=25, batch_size=16, eval_pairs=32,
                  k_coef=1e-3, lr=3e-2, progress=False)
    circuit = prune(model, task, seed=0, **kwargs)
    assert circuit.losses["circuit_val"] <= 0.3
    assert 0 < circuit.n_nodes < model.node_registry.n_nodes
    assert circuit.losses["empty"] > circuit.losses["circuit"]
    # the reported test loss is what running circuit.hooks yourself gives
    batch = task.batch(n=32, split="test", seed=0)
    by_hand = task.loss_from_logits(model.run_with_hooks(batch.tokens, fwd_hooks=circuit.hooks(model, batch.tokens)), batch)
    assert float(by_hand) == pytest.approx(circuit.losses["circuit"], abs=1e-6)
    assert circuit.evaluate(model, task, split="test", n=32) == pytest.approx(circuit.losses["circuit"], abs=1e-6)
    # deterministic for a seed on CPU
    assert prune(model, task, seed=0, **kwargs).kept == circuit.kept
    # save / load
    loaded = Circuit.load(circuit.save(tmp_path / "c.json"))
    assert loaded.kept == circuit.kept and loaded.n_edges == circuit.n_edges and loaded.losses == circuit.losses
    assert loaded.evaluate(model, task, n=32) == pytest.approx(circuit.losses["circuit"], abs=1e-6)


@pytest.mark.parametrize("options", [dict(ablation="zero"), dict(ablation="resample", freeze_norms=True)])
def test_prune_other_ablations(trained, options):
    model, task, _ = trained
    circuit = prune(model, task, target_loss=0.3, steps=10, batch_size=16, eval_pairs=32, progress=False, **options)
    assert circuit.losses["circuit_val"] <= 0.3 and circuit.ablation == options["ablation"]
    assert circuit.evaluate(model, task, n=32) == pytest.approx(circuit.losses["circuit"], abs=1e-6)


def test_edge_count_matches_an_independent_count():
    model = HookedSparseTransformer(tiny_config(n_layers=2, d_model=16, d_head=4, d_mlp=16, d_vocab=12))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # make the weights sparse, like a weight-sparse model's
        for p in model.parameters():
            p.mul_(torch.rand(p.shape, generator=gen) < 0.4)
    keep = {s.name: torch.rand(s.n_nodes, generator=gen) < 0.5 for s in model.node_sites}
    mask = NodeMask(model.node_registry, keep)
    targets = (3, 7)
    counts = count_edges(model, mask, targets)

    expected = 0
    k = lambda site, i: bool(keep[site][i])  # noqa: E731
    writes = []  # (site name, ln-free) kept writes so far
    for l, b in enumerate(model.blocks):
        for kind, proj in (("q", b.attn.q_proj), ("k", b.attn.k_proj), ("v", b.attn.v_proj)):
            for j in range(16):
                for i in range(16):
                    expected += int(proj.weight[j, i] != 0 and k(f"L{l}.{kind}", j) and k(f"L{l}.attn_in", i))
        for o in range(16):
            for j in range(16):
                expected += int(b.attn.o_proj.weight[o, j] != 0 and k(f"L{l}.v", j) and k(f"L{l}.attn_out", o))
                expected += int(b.mlp.fc_in.weight[j, o] != 0 and k(f"L{l}.neuron", j) and k(f"L{l}.mlp_in", o))
                expected += int(b.mlp.fc_out.weight[o, j] != 0 and k(f"L{l}.mlp_out", o) and k(f"L{l}.neuron", j))
        for read, norm, write in (("attn_in", b.ln1, "attn_out"), ("mlp_in", b.ln2, "mlp_out")):
            for c in range(16):
                if k(f"L{l}.{read}", c) and norm.w[c] != 0:
                    expected += sum(k(w, c) for w in writes)  # residual edges
                    expected += int(bool((model.W_E[:, c] != 0).any()))  # embedding edge
            writes.append(f"L{l}.{write}")
    for t in targets:
        for c in range(16):
            if model.W_U[c, t] != 0 and model.ln_final.w[c] != 0:
                expected += sum(k(w, c) for w in writes)
    assert sum(counts.values()) == expected
    edges = circuit_edges(model, mask, targets)
    assert {kind: sum(e.kind == kind for e in edges) for kind in counts} == counts
    assert all(e.weight != 0 for e in edges)
    assert len({(e.src, e.dst) for e in edges}) == len(edges)
    assert count_edges(model, NodeMask.full(model.node_registry, keep=False), targets) == dict.fromkeys(counts, 0)


def test_hostile_callers(trained, tmp_path):
    model, task, means = trained
    full_loss = float(task.loss(model, task.batch(n=32, split="val")))
    with pytest.raises(ValueError, match="above target_loss"):
        prune(model, task, target_loss=full_loss / 100, means=means, steps=1, eval_pairs=32, progress=False)
    with pytest.raises(ValueError, match="mean ablation needs means"):
        prune(model, task, progress=False)
    untrained = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=256, d_vocab=2048))
    with pytest.raises(ValueError, match="full model's loss .* is 0.6"):  # a model that cannot do the task
        prune(untrained, task, ablation="zero", steps=1, eval_pairs=32, progress=False)

    circuit = prune(model, task, target_loss=0.3, ablation="zero", steps=3, eval_pairs=32, progress=False)
    with pytest.raises(ValueError, match="different model"):
        circuit.hooks(untrained)
    path = circuit.save(tmp_path / "c.json")
    data = json.loads(path.read_text())
    data["version"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema version 7"):
        Circuit.load(path)
    path.write_text('{"schema": "sparselens.circ')
    with pytest.raises(ValueError, match="not valid JSON"):
        Circuit.load(path)
    with pytest.raises(FileNotFoundError, match="no circuit file"):
        Circuit.load(tmp_path / "missing.json")


def test_prune_cli_sweep_writes_circuits_table_and_plot(trained, tmp_path, capsys):
    from sparselens.cli import main

    model, task, _ = trained
    model.save_pretrained(tmp_path / "model")
    rc = main(["prune", "--model", str(tmp_path / "model"), "--task", task.name, "--targets", "0.3,0.2",
               "--ablation", "zero", "--steps", "5", "--batch-size", "8", "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{task.name}-zero-seed0-sweep.html", f"{task.name}-zero-seed0-target0.2.json",
                     f"{task.name}-zero-seed0-target0.3.json"]
    circuits = [Circuit.load(tmp_path / "out" / f) for f in files[1:]]
    assert circuits[0].n_nodes >= circuits[1].n_nodes  # a lower target needs at least as many nodes
    for c in circuits:
        assert f"{c.losses['target']:>8.3f}{c.n_nodes:>8}{c.n_edges:>9}" in printed
    assert main(["prune", "--model", str(tmp_path / "model"), "--task", "no_such_task"]) == 2
    assert main(["prune", "--model", str(tmp_path / "model"), "--task", task.name, "--targets", "0.1,x"]) == 2


def test_compare_report_tables_follow_the_circuits(trained, tmp_path):
    from types import SimpleNamespace

    from sparselens.prune.compare import VARIANTS, write_report

    model, task, means = trained
    circuits = {v: prune(model, task, target_loss=0.3, ablation=a, freeze_norms=f, means=means, steps=3,
                         eval_pairs=32, progress=False) for v, (_, a, f) in VARIANTS.items()}
    results = {(task.name, v, 0): c for v, c in circuits.items()}
    args = SimpleNamespace(sparse="s", dense="d", target=0.3, steps=3, batch_size=8)
    losses = {"sparse": {task.name: 0.01}, "dense": {task.name: 0.02}}
    report = write_report(results, {}, [task.name], [0], losses, args, tmp_path).read_text()
    assert (tmp_path / "comparisons.png").exists()
    dense, sparse = circuits["dense, mean"], circuits["sparse, mean"]
    ratio = dense.n_edges / max(sparse.n_edges, 1)
    assert f"{dense.n_nodes} / {dense.n_edges} vs {sparse.n_nodes} / {sparse.n_edges} ({ratio:.2f}x edges)" in report
    assert "1 tasks x 1 seed(s)" in report and f"| {task.name} | 0.0100 | 0.0200 | {sparse.losses['empty']:.4f} |" in report
    results[(task.name, "dense, mean", 0)] = SimpleNamespace(n_nodes=0, n_edges=0, losses=dense.losses)
    assert "an empty circuit already reaches the target" in write_report(results, {}, [task.name], [0], losses, args, tmp_path).read_text()
