"""Seed stability: Jaccard against hand computations; in-process, a 2-process pool and torchrun with 2
ranks give the same result, and that result against prune() and Circuit.evaluate(); the ``seeds``
check's metrics and flags; hostile inputs."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import sparselens.faithfulness as faithfulness
from sparselens.cli import main
from sparselens.faithfulness import seeds as seeds_module
from sparselens.faithfulness.registry import resolve
from sparselens.faithfulness.seeds import SeedStability, jaccard, jaccard_matrix, node_set, seed_stability
from sparselens.interventions import compute_means
from sparselens.prune import Circuit, PruneConfig, prune
from sparselens.tasks import Task, get_task

# few steps and pairs: the point is that the modes agree, not that the circuits are good
CHEAP = dict(steps=10, batch_size=8, eval_pairs=16, train_pairs=64, k_coef=1e-3, lr=3e-2)
MEAN = PruneConfig(ablation="mean", **CHEAP)
ZERO = PruneConfig(ablation="zero", **CHEAP)
SEEDS = [0, 1, 2]
TARGET = 0.3  # single_double_quote: the model reaches ~0.002, the empty circuit ~2.7


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what a pool worker on a 2-core machine gets; pruning does not depend on it
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def in_process(trained_on_quotes):
    model, task, means = trained_on_quotes
    return seed_stability(model, task, SEEDS, target_loss=TARGET, config=MEAN, means=means, workers=1, progress=False)


def names(circuit, model) -> set:
    return set(circuit.node_names(model))


def hand_circuit(kept: dict) -> Circuit:
    return Circuit(kept=kept, edge_counts={}, residual_links=0, task="t", target_ids=(), input_ids=(), n_positions=1,
                   ablation="zero", freeze_norms=False, losses={}, model_fingerprint="none")


def test_jaccard_of_hand_made_circuits():
    a = hand_circuit({"L0.neuron": [1, 2, 3], "L0.q": [0]})
    b = hand_circuit({"L0.neuron": [2, 3, 4]})
    c = hand_circuit({"L0.q": [1, 2, 3]})  # same indices as a's neurons, other site: other nodes
    e1, e2 = hand_circuit({}), hand_circuit({"L0.neuron": []})
    # by hand: a & b = {n2, n3}, a | b = {n1, n2, n3, n4, q0}; a & c = {}; two empty sets: 1 by definition
    assert jaccard(node_set(a), node_set(b)) == pytest.approx(2 / 5)
    assert jaccard(node_set(a), node_set(c)) == 0.0 and jaccard(node_set(b), node_set(c)) == 0.0
    assert jaccard(node_set(e1), node_set(e2)) == 1.0 and jaccard(node_set(a), node_set(e1)) == 0.0
    matrix = jaccard_matrix([node_set(x) for x in (a, b, c, e1)])
    expected = torch.tensor([[1, 0.4, 0, 0], [0.4, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(matrix, expected)
    result = SeedStability(seeds=[5, 6, 7], circuits=[a, b, c], jaccard=matrix[:3, :3], loss=[0.1, 0.35, 0.2],
                           ood_loss=None, core_nodes=[], task="t", target_loss=0.3, test_pairs=8, test_seed=0)
    assert result.jaccard_min == 0.0 and result.jaccard_mean == pytest.approx(0.4 / 3)
    assert result.loss_spread == pytest.approx(0.25) and result.ood_loss_spread != result.ood_loss_spread  # NaN
    table = result.summary()
    assert "min 0.00, mean 0.13" in table and "0 nodes in every circuit" in table and "ood loss" not in table


def test_in_process_result_against_prune_and_evaluate(trained_on_quotes, in_process):
    model, task, means = trained_on_quotes
    r = in_process
    assert r.seeds == SEEDS and [c.seed for c in r.circuits] == SEEDS
    alone = prune(model, task, TARGET, dataclasses.replace(MEAN, seed=1), means=means, progress=False)
    assert r.circuits[1] == alone  # the same prune as calling prune() with that seed
    sets = [names(c, model) for c in r.circuits]
    for i in range(3):
        for j in range(3):
            union = sets[i] | sets[j]
            assert r.jaccard[i, j] == pytest.approx(len(sets[i] & sets[j]) / len(union) if union else 1.0)
    assert set(r.core_nodes) == sets[0] & sets[1] & sets[2] and len(r.core_nodes) == len(set(r.core_nodes))
    # the losses: every circuit on the same 16 test pairs (seed 0), through Circuit.evaluate's own path
    assert r.loss == pytest.approx([c.evaluate(model, task, n=16, seed=0) for c in r.circuits], abs=1e-6)
    assert r.loss_spread == pytest.approx(max(r.loss) - min(r.loss))
    # the quote task has an ood split (longer strings): the same circuits on the same 16 OOD pairs
    assert r.ood_loss == pytest.approx([c.evaluate(model, task, split="ood", n=16, seed=0) for c in r.circuits], abs=1e-6)
    assert r.loss[0] == pytest.approx(r.circuits[0].losses["circuit"], abs=1e-6)  # seed 0's own test pairs are these
    assert len(set(map(frozenset, sets))) > 1, "the seeds should find different circuits here, or nothing is compared"


def test_a_pool_of_two_processes_gives_the_same_result(trained_on_quotes, in_process, monkeypatch):
    model, task, means = trained_on_quotes

    def not_here(*args, **kwargs):
        raise AssertionError("with workers=2 the seeds must be pruned in the worker processes")

    monkeypatch.setattr(seeds_module, "_prune_one", not_here)  # fresh spawned workers do not see this
    pooled = seed_stability(model, task, SEEDS, target_loss=TARGET, config=MEAN, means=means, workers=2, progress=False)
    assert pooled.to_dict() == in_process.to_dict()
    assert [c.means for c in pooled.circuits] == [c.means for c in in_process.circuits]  # the means reached the workers


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo")
def test_torchrun_with_two_ranks_gives_the_same_result(trained_on_quotes, tmp_path):
    model, task, _ = trained_on_quotes
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "seeds.json"
    options = [f"--{k.replace('_', '-')}={v}" for k, v in CHEAP.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "sparselens.cli", "seeds", "--model", str(tmp_path / "model"), "--task", task.name,
               "--seeds", ",".join(map(str, SEEDS)), "--target", str(TARGET), "--ablation", "zero", *options,
               "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Seed stability of 3 circuits") == 1  # rank 0 prints, rank 1 does not
    here = seed_stability(model, task, SEEDS, target_loss=TARGET, config=ZERO, workers=1, progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(here.to_dict()))


@pytest.fixture(scope="module")
def on_ood_task(trained_on_quotes):
    """The quotes model on a task with an OOD split (it barely does it, but pruning to 0.685 needs nodes)."""
    model, _, _ = trained_on_quotes
    task = get_task("set_or_string_fixedvarname", tokenizer=model.tokenizer)
    means = compute_means(model, [task.batch(n=16, split="train", seed=1000).tokens], progress=False)
    config = PruneConfig(ablation="mean", **CHEAP)
    direct = seed_stability(model, task, [4, 5], target_loss=0.685, config=config, means=means, workers=1, progress=False)
    return model, task, direct


def test_ood_losses_are_each_circuit_on_the_same_ood_pairs(on_ood_task):
    model, task, r = on_ood_task
    assert r.ood_loss == pytest.approx([c.evaluate(model, task, split="ood", n=16, seed=0) for c in r.circuits], abs=1e-6)
    assert r.ood_loss_spread == pytest.approx(abs(r.ood_loss[0] - r.ood_loss[1]))
    assert all(c.n_nodes > 0 for c in r.circuits) and "ood loss" in r.summary()


def test_the_seeds_check(on_ood_task, monkeypatch):
    model, task, direct = on_ood_task
    monkeypatch.setattr(seeds_module, "CHECK_EXTRA_SEEDS", 1)  # the circuit's seed 4, and 5
    monkeypatch.setattr(seeds_module, "CHECK_WORKERS", 1)
    assert "seeds" in faithfulness.CHECKS and "seeds" not in [c.name for c in resolve(None)]  # it prunes again
    circuit = direct.circuits[0]
    report = faithfulness.evaluate(model, circuit, task, checks=["seeds"], n_pairs=16, seed=0, progress=False)
    m = report.metrics
    a, b = (names(c, model) for c in direct.circuits)
    assert m["seeds_jaccard_min"] == m["seeds_jaccard_mean"] == pytest.approx(len(a & b) / len(a | b))
    assert m["seeds_core_nodes"] == len(a & b)
    losses = [c.evaluate(model, task, n=16, seed=0) for c in direct.circuits]
    ood = [c.evaluate(model, task, split="ood", n=16, seed=0) for c in direct.circuits]
    assert m["seeds_loss_spread"] == pytest.approx(abs(losses[0] - losses[1]), abs=1e-6)
    assert m["seeds_ood_loss_spread"] == pytest.approx(abs(ood[0] - ood[1]), abs=1e-6)
    assert set(report.nodes) == a and all(row["seed_share"] == (1.0 if n in b else 0.5) for n, row in report.nodes.items())
    flagged = " ".join(report.flags)
    assert ("overlap as little as" in flagged) == (len(a & b) / len(a | b) < 0.5)
    spread, ood_spread = abs(losses[0] - losses[1]), abs(ood[0] - ood[1])
    assert ("not out of distribution" in flagged) == (ood_spread >= 0.05 and ood_spread > 2 * spread)
    assert "own seed" not in flagged  # seed 4 re-pruned with the circuit's config and means is the circuit
    site = next(name for name, kept in circuit.kept.items() if kept)
    edited = dataclasses.replace(circuit, kept={**circuit.kept, site: circuit.kept[site][1:]})  # one node less
    report = faithfulness.evaluate(model, edited, task, checks=["seeds"], n_pairs=16, seed=0, progress=False)
    assert "own seed (4) and config gives a different circuit" in " ".join(report.flags)
    assert set(report.nodes) == names(edited, model)


def test_hostile_inputs(trained_on_quotes, capsys):
    model, task, means = trained_on_quotes
    call = dict(target_loss=TARGET, config=ZERO, progress=False)
    for bad, message in (([], "at least two seeds"), ([3], "at least two seeds"), ([0, 1, 0], r"\[0\] appear more than once"),
                         ([0, 1.5], r"1.5 \(float\) .* is not"), ([0, True], r"True \(bool\)"), ("01", "list of integers"),
                         (3, "list of integers")):
        with pytest.raises(ValueError, match=message):
            seed_stability(model, task, bad, **call)
    with pytest.raises(ValueError, match="did you mean 'steps'"):
        seed_stability(model, task, [0, 1], stpes=5, **call)
    with pytest.raises(ValueError, match=r"seeds=\[\.\.\.\], not seed="):
        seed_stability(model, task, [0, 1], seed=4, **call)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        seed_stability(model, task, [0, 1], workers=0, **call)
    with pytest.raises(ValueError, match="seed 0: target 0.0001 skipped"):
        seed_stability(model, task, [0, 1], target_loss=1e-4, config=ZERO, workers=1, progress=False)
    mine = Task("my_quotes", task.generator, list(task.target_ids), model.tokenizer)  # not in the registry
    with pytest.raises(ValueError, match="'my_quotes' is not registered.*workers=1"):
        seed_stability(model, mine, [0, 1], workers=2, **call)
    circuit = prune(model, task, TARGET, ZERO, progress=False)
    with pytest.raises(ValueError, match="does not record the PruneConfig"):
        faithfulness.evaluate(model, dataclasses.replace(circuit, config={}), task, checks=["seeds"], n_pairs=4, progress=False)
    assert main(["seeds", "--model", "m", "--task", "t", "--seeds", "0,a"]) == 2
    assert "--seeds must be integers separated by commas, got '0,a'" in capsys.readouterr().err
    assert main(["seeds", "--model", "m", "--task", "t", "--seed", "3"]) == 2
    assert "give the seeds to compare as --seeds" in capsys.readouterr().err
