"""The controls check: the shuffled model keeps each matrix's sparsity pattern and values, the nonsense
task keeps the prompts and swaps in one consistent pair of single tokens, pruning with the learned
mask's bound finds circuits where the full model misses the target, and the check reports, flags and
notes as it says, on the circuit's own settings; hostile inputs."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import randomize, tiny_config

import sparselens.faithfulness as faithfulness
from sparselens import HookedSparseTransformer
from sparselens.data import iter_batches, load_corpus, load_tokenizer
from sparselens.faithfulness.context import CheckResult
from sparselens.faithfulness.controls import _own_means, _record, nonsense_task, shuffled_weights
from sparselens.faithfulness.registry import CHECKS, resolve
from sparselens.interventions import ReferenceRun, compute_means
from sparselens.prune import MaskTrainer, PruneConfig, circuit_loss, prune
from sparselens.tasks import get_task

CONFIG = PruneConfig(ablation="mean", steps=8, batch_size=16, eval_pairs=16, train_pairs=128, k_coef=1e-3, lr=3e-2)


@pytest.fixture(scope="module")
def setup(trained_on_quotes):
    model, task, means = trained_on_quotes
    circuit = prune(model, task, 0.3, CONFIG, means=means, progress=False)
    return model, task, circuit


def replay_mask(model, task, config, means):
    """The mask pruning learns, replayed step by step: (nodes with tau >= 0, their validation loss, the model's)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        trainer = MaskTrainer(model, task, config, means)
        for step in range(config.steps):
            trainer.step(trainer.batch(step))
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    kept = {name: (tau.detach() >= 0).float() for name, tau in trainer.mask.tau.items()}
    val = task.batch(n=config.eval_pairs, split="val", seed=config.seed)
    loss = circuit_loss(model, task, kept, val, config.ablation, ReferenceRun.of(model, val), means)
    return int(sum(m.sum() for m in kept.values())), loss, float(task.loss(model, val))


@pytest.fixture(scope="module")
def nonsense_replay(setup):
    """The nonsense control of the report's seed 0, and the mask pruning it with the circuit's config learns."""
    model, task, circuit = setup
    nonsense = nonsense_task(task, model.cfg.d_vocab, seed=0)
    return nonsense, replay_mask(model, nonsense, CONFIG, circuit.means_for(model))


def sparse_model() -> HookedSparseTransformer:
    """A random model with about 70% of every matrix's weights exactly zero."""
    model = randomize(HookedSparseTransformer(tiny_config(attn_sink=True, bigram_table=True, positional_embedding_type="learned")))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand(p.shape, generator=gen) < 0.3).float())
    return model


def test_shuffled_weights_keep_each_matrix_pattern_and_values():
    model = sparse_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shuffled = shuffled_weights(model, seed=3)
    theirs = dict(shuffled.named_parameters())
    moved = 0
    for name, p in model.named_parameters():
        q = theirs[name]
        if p.dim() < 2:
            assert torch.equal(q, p), f"{name}: vectors are left alone"
            continue
        nonzero = p != 0
        assert torch.equal(q != 0, nonzero), f"{name}: the sparsity pattern changed"
        assert torch.equal(torch.sort(q[nonzero]).values, torch.sort(p[nonzero]).values), f"{name}: the values changed"
        if p[nonzero].unique().numel() > 1:
            assert not torch.equal(q, p), f"{name}: nothing moved"
            moved += 1
    assert moved >= 8  # embedding, unembedding, q/k/v/o and both MLP matrices of each layer
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the original model was changed"
    again, other = shuffled_weights(model, seed=3), shuffled_weights(model, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), shuffled.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(other.parameters(), shuffled.parameters()))


def test_nonsense_task_swaps_in_one_consistent_pair_of_single_tokens(trained_on_quotes):
    model, task, _ = trained_on_quotes
    tok = task.tokenizer
    nonsense = nonsense_task(task, model.cfg.d_vocab, seed=0)
    a, b = nonsense.new_targets
    ids = [tok.encode(t, add_special_tokens=False) for t in (a, b)]
    assert a != b and all(len(i) == 1 and i[0] < model.cfg.d_vocab for i in ids)
    assert not {a, b} & set(task.target_ids) and not {i[0] for i in ids} & set(task.target_ids.values())
    for split, seed in (("train", 0), ("test", 3)):
        own, swapped = task.pairs(12, split, seed), nonsense.pairs(12, split, seed)
        assert [(p.prompt_a, p.prompt_b) for p in swapped] == [(p.prompt_a, p.prompt_b) for p in own]
        assert {(p.target_a, p.target_b) for p in swapped} == {(a, b)}
    batch, original = nonsense.batch(n=12, split="val", seed=1), task.batch(n=12, split="val", seed=1)
    assert torch.equal(batch.tokens, original.tokens)
    assert batch.correct[:12].tolist() == [ids[0][0]] * 12 == batch.wrong[12:].tolist()
    assert batch.correct[12:].tolist() == [ids[1][0]] * 12 == batch.wrong[:12].tolist()
    # arbitrary but reproducible from the seed, and below a smaller vocabulary when asked
    assert nonsense_task(task, model.cfg.d_vocab, seed=0).new_targets == (a, b)
    assert len({nonsense_task(task, model.cfg.d_vocab, seed=s).new_targets for s in range(5)}) > 1
    small = nonsense_task(task, 300, seed=0).new_targets
    assert all(tok.encode(t, add_special_tokens=False)[0] < 300 for t in small)


def test_with_targets_keeps_the_splits_and_rejects_bad_targets():
    task = get_task("set_or_string_fixedvarname")
    swapped = task.with_targets(" foo", " bar")
    assert swapped.splits == task.splits and "ood" in swapped.splits
    assert [p.prompt_b for p in swapped.pairs(6, "ood")] == [p.prompt_b for p in task.pairs(6, "ood")]
    assert swapped.name == "set_or_string_fixedvarname: foo/ bar" and swapped.default_kind == task.default_kind
    with pytest.raises(ValueError, match="must differ"):
        task.with_targets(" foo", " foo")
    with pytest.raises(ValueError, match="target ' foo bar baz' is [0-9]+ tokens"):
        task.with_targets(" foo bar baz", " bar")


def test_the_learned_bound_prunes_where_the_full_model_misses_the_target(setup, nonsense_replay):
    model, _, circuit = setup
    nonsense, (n_learned, learned_loss, model_loss) = nonsense_replay
    assert learned_loss < model_loss  # the premise: the mask does better than the model it masks
    target = (learned_loss + model_loss) / 2
    means = circuit.means_for(model)
    with pytest.raises(ValueError, match="skipped: the full model reaches"):
        prune(model, nonsense, target, CONFIG, means=means, progress=False)
    found = prune(model, nonsense, target, CONFIG, means=means, progress=False, bound="learned")
    assert found.losses["circuit_val"] <= target < found.losses["model_val"]
    assert found.n_nodes <= n_learned and found.task == "nonsense single_double_quote"
    with pytest.raises(ValueError, match=r"bound must be one of \('all', 'learned'\)"):
        prune(model, nonsense, target, CONFIG, means=means, progress=False, bound="every")


def test_controls_flag_a_control_that_reaches_the_target_small(setup, nonsense_replay):
    model, task, circuit = setup
    nonsense, _ = nonsense_replay
    easy = dataclasses.replace(circuit, losses={**circuit.losses, "target": 50.0})  # any circuit reaches it
    r = faithfulness.evaluate(model, easy, task, checks=["controls"], n_pairs=8, progress=False)
    m = r.metrics
    assert r.checks == ["controls"]
    assert (m["control_target"], m["control_real_nodes"], m["control_real_edges"]) == (50.0, circuit.n_nodes, circuit.n_edges)
    assert m["control_real_loss"] == circuit.losses["circuit_val"]
    # by hand: the empty circuit already reaches a loss of 50, so the smallest control circuit has no node
    val = nonsense.batch(n=CONFIG.eval_pairs, split="val", seed=CONFIG.seed)
    empty = {name: torch.zeros_like(vec, dtype=torch.float) for name, vec in circuit.node_mask(model).keep.items()}
    empty_loss = circuit_loss(model, nonsense, empty, val, "mean", None, circuit.means_for(model))
    assert empty_loss <= 50 and m["control_nonsense_nodes"] == 0 == m["control_nonsense_edges"]
    assert m["control_nonsense_loss"] == pytest.approx(empty_loss, abs=1e-6)
    assert m["control_nonsense_loss_model"] == pytest.approx(float(nonsense.loss(model, val)), abs=1e-6)
    assert m["control_shuffled_nodes"] == 0
    a, b = nonsense.new_targets
    nonsense_flags = [f for f in r.flags if f.startswith(f"The nonsense control (targets {a!r}/{b!r}) reaches the target 50 with 0 nodes")]
    shuffled_flags = [f for f in r.flags if f.startswith("The shuffled-weights control")]
    assert len(nonsense_flags) == 1 == len(shuffled_flags) and len(r.flags) == 2
    assert f"twice the real circuit's {circuit.n_nodes}" in nonsense_flags[0]
    assert "the shuffled-weights control's node means are its own, over the task's 128 training pairs" in r.notes


def test_controls_that_miss_the_target_are_reported_not_flagged(setup, nonsense_replay):
    model, task, circuit = setup
    _, (n_learned, learned_loss, _) = nonsense_replay
    hard = dataclasses.replace(circuit, losses={**circuit.losses, "target": 1e-6})
    r = faithfulness.evaluate(model, hard, task, checks=["controls"], n_pairs=8, progress=False)
    m = r.metrics
    assert not r.flags
    for name in ("nonsense", "shuffled"):
        assert math.isnan(m[f"control_{name}_nodes"]) and math.isnan(m[f"control_{name}_edges"])
        assert m[f"control_{name}_loss"] > 1e-6
    assert m["control_nonsense_loss"] == pytest.approx(learned_loss, abs=1e-6)  # the loss the learned mask reached
    notes = [n for n in r.notes if n.startswith("control_nonsense_nodes and _edges are NaN")]
    assert len(notes) == 1 and f"with the {n_learned} nodes the learned mask keeps" in notes[0]
    assert sum(n.startswith("control_shuffled_nodes and _edges are NaN") for n in r.notes) == 1


def test_the_flag_takes_at_most_twice_the_real_circuits_nodes(setup):
    _, _, circuit = setup
    real = dataclasses.replace(circuit, kept={"L0.neuron": list(range(5))})

    def control_of(n):
        return dataclasses.replace(circuit, kept={"L0.neuron": list(range(n))}, losses={**circuit.losses, "circuit_val": 0.1})

    for n, flagged in ((10, True), (11, False), (0, True)):
        out = CheckResult(metrics={"control_x_loss_model": 0.7})
        _record(out, "x", "x control", control_of(n), [], real, 0.15)
        assert out.metrics["control_x_nodes"] == n and out.metrics["control_x_loss"] == 0.1
        assert bool(out.flags) == flagged, n
        if flagged:
            assert out.flags[0].startswith(f"The x control reaches the target 0.15 with {n} nodes, no more than twice the real circuit's 5")


def test_the_shuffled_models_means_are_its_own(setup, tmp_path):
    model, task, circuit = setup
    shuffled = shuffled_weights(model, seed=0)
    ctx = SimpleNamespace(model=model, task=task, progress=False)
    means, source = _own_means(ctx, shuffled, CONFIG)
    assert source == "the task's 128 training pairs"
    tokens = task.batch(n=CONFIG.train_pairs, split="train", seed=CONFIG.seed).tokens
    site = "blocks.0.mlp.hook_post"
    _, cache = shuffled.run_with_cache(tokens, names_filter=site)
    torch.testing.assert_close(means[site], cache[site].float().mean(dim=(0, 1)))
    assert not torch.allclose(means[site], circuit.means_for(model)["L0.neuron"])
    # a model that names its pretraining corpus: means over that corpus, as pretraining_means batches it
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + 'abc'\n" * 20)
    small = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=16, d_vocab=2048), tokenizer=load_tokenizer())
    small.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "train_config.yaml").write_text(f"data: {{source: {corpus}}}\n")
    small = HookedSparseTransformer.from_pretrained(tmp_path / "model")
    shuffled = shuffled_weights(small, seed=0)
    means, source = _own_means(SimpleNamespace(model=small, task=task, progress=False), shuffled, CONFIG)
    assert source == f"32 batches of 16 from its pretraining corpus {str(corpus)!r}"
    rows = load_corpus(str(corpus), n_ctx=16, split="train", tokenizer=small.tokenizer, progress=False)
    expected = compute_means(shuffled, iter_batches(rows, batch_size=16, seed=0), n_batches=32, progress=False)
    for name in expected:
        torch.testing.assert_close(means[name], expected[name])


def test_hostile_inputs(setup):
    model, task, circuit = setup
    assert "controls" in CHECKS and "controls" not in [c.name for c in resolve(None)]  # it prunes twice: asked for by name
    with pytest.raises(ValueError, match=r"stores none \(circuit.config is empty\); re-prune it with sparselens.prune"):
        faithfulness.evaluate(model, dataclasses.replace(circuit, config={}), task, checks=["controls"], n_pairs=4, progress=False)
    no_target = {k: v for k, v in circuit.losses.items() if k != "target"}
    with pytest.raises(ValueError, match=r"no finite 'target'.*set circuit.losses\['target'\]"):
        faithfulness.evaluate(model, dataclasses.replace(circuit, losses=no_target), task, checks=["controls"], n_pairs=4,
                              progress=False)
    with pytest.raises(ValueError, match="unknown PruneConfig field"):
        faithfulness.evaluate(model, dataclasses.replace(circuit, config={**circuit.config, "stpes": 3}), task,
                              checks=["controls"], n_pairs=4, progress=False)
