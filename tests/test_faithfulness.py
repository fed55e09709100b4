"""The faithfulness suite: every metric against its definition on circuits whose answer is known
(the full circuit, the empty circuit), the adversary's bound, the parts against a hand computation,
hostile inputs, and the report's files."""

import dataclasses
import json
import math

import pytest
import torch
from conftest import tiny_config

import sparselens.faithfulness as faithfulness
from sparselens import HookedSparseTransformer, NodeMask
from sparselens.divergence import js, kl
from sparselens.prune import PruneConfig, prune
from sparselens.tasks import Task, get_task


@pytest.fixture(scope="module")
def setup(trained_on_quotes):
    model, task, means = trained_on_quotes
    circuit = prune(model, task, 0.3, PruneConfig(ablation="mean", steps=20, batch_size=16, eval_pairs=32,
                                                   train_pairs=256, k_coef=1e-3, lr=3e-2), means=means, progress=False)
    return model, task, circuit


def with_kept(circuit, model, keep: bool):
    mask = NodeMask.full(model.node_registry, keep=keep)
    return dataclasses.replace(circuit, kept={name: vec.nonzero().flatten().tolist() for name, vec in mask.keep.items()})


CHEAP = ["losses", "adversarial", "nodes", "attention"]


def test_the_full_circuit_is_perfectly_faithful(setup):
    model, task, circuit = setup
    full = with_kept(circuit, model, True)
    r = faithfulness.evaluate(model, full, task, checks=CHEAP, n_pairs=16, progress=False)
    m = r.metrics
    assert m["loss_circuit"] == m["loss_model"] and m["kl_answer"] == 0.0 and m["kl_all"] == 0.0
    assert m["faithfulness"] == 1.0 and m["argmax_agreement"] == 1.0
    assert m["adversarial_loss"] == m["loss_circuit"] and m["adversarial_kl"] == 0.0  # nothing outside to move
    assert m["node_corr_min"] == pytest.approx(1.0) and m["attention_js_max"] == 0.0
    assert not any(row["repurposed"] for row in r.nodes.values())


def test_the_empty_circuit_has_faithfulness_zero(setup):
    model, task, circuit = setup
    r = faithfulness.evaluate(model, with_kept(circuit, model, False), task, checks=["losses"], n_pairs=16, progress=False)
    assert r.metrics["loss_circuit"] == r.metrics["loss_empty"] and r.metrics["faithfulness"] == 0.0


def test_metrics_follow_their_definitions(setup):
    model, task, circuit = setup
    r = faithfulness.evaluate(model, circuit, task, n_pairs=16, progress=False)
    m = r.metrics
    assert set(r.checks) == {"losses", "stochastic", "adversarial", "nodes", "attention", "ood"}  # the task has an ood split
    # by hand, from runs written here (not through the suite's context)
    batch = task.batch(n=16, split="test", seed=0)
    with torch.no_grad():
        full = model(batch.tokens)
        circ = model.run_with_hooks(batch.tokens, fwd_hooks=circuit.hooks(model))
        ood = task.batch(n=16, split="ood", seed=0)
        ood_full, ood_circ = model(ood.tokens), model.run_with_hooks(ood.tokens, fwd_hooks=circuit.hooks(model))
    assert m["ood_loss_model"] == pytest.approx(float(task.loss_from_logits(ood_full, ood)), abs=1e-6)
    assert m["ood_loss_circuit"] == pytest.approx(float(task.loss_from_logits(ood_circ, ood)), abs=1e-6)
    # a task without an ood split: skipped by default with a note, an error when asked for
    plain = Task("quotes_without_ood", task.generator, list(task.target_ids), model.tokenizer)
    renamed = dataclasses.replace(circuit, task=plain.name)
    skipped = faithfulness.evaluate(model, renamed, plain, checks=None, n_pairs=4, progress=False)
    assert "ood" not in skipped.checks and any("ood skipped" in n for n in skipped.notes)
    rows, read = torch.arange(32), batch.read_pos
    assert m["loss_model"] == pytest.approx(float(task.loss_from_logits(full, batch)), abs=1e-6)
    assert m["loss_circuit"] == pytest.approx(float(task.loss_from_logits(circ, batch)), abs=1e-6)
    assert m["kl_answer"] == pytest.approx(float(kl(full[rows, read], circ[rows, read]).mean()), rel=1e-5)
    assert m["faithfulness"] == pytest.approx((m["loss_empty"] - m["loss_circuit"]) / (m["loss_empty"] - m["loss_model"]))
    assert m["adversarial_loss"] >= m["loss_circuit"] and m["adversarial_kl"] >= m["kl_answer"] - 1e-6
    assert m["stochastic_uniform_loss_p95"] >= m["stochastic_uniform_loss_mean"] - 1e-9
    assert {"loss_under_zero", "loss_under_resample"} <= set(m) and "loss_under_mean" not in m
    # a node's correlation, by hand (a node whose correlation is defined: it varies in both runs)
    name, row = next((n, v) for n, v in r.nodes.items() if not v["constant"])
    node = model.node_registry.node(name)
    _, full_cache = model.run_with_cache(batch.tokens, names_filter=node.site.hook_name)
    seen = {}
    with torch.no_grad():
        model.run_with_hooks(batch.tokens, fwd_hooks=circuit.hooks(model) + [(node.site.hook_name, lambda x, hook: seen.setdefault("x", x))])
    valid = torch.arange(batch.tokens.shape[1])[None] <= read[:, None]
    a = full_cache[node.site.hook_name].flatten(2)[..., node.index][valid].double()
    b = seen["x"].flatten(2)[..., node.index][valid].double()
    assert a.std() > 0 and b.std() > 0
    assert row["corr"] == pytest.approx(float(torch.corrcoef(torch.stack([a, b]))[0, 1]), abs=1e-6)


def test_divergences_against_hand_computations():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    m = (p + q) / 2
    expected = 0.5 * sum(float(a * math.log(a / b)) for a, b in zip(p, m) if a > 0) + 0.5 * sum(
        float(a * math.log(a / b)) for a, b in zip(q, m) if a > 0)
    assert float(js(p, q)) == pytest.approx(expected) and float(js(p, p)) == 0.0
    logits_p, logits_q = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.0, 1.0, 3.0])
    pp, qq = logits_p.softmax(-1), logits_q.softmax(-1)
    assert float(kl(logits_p, logits_q)) == pytest.approx(float((pp * (pp / qq).log()).sum()), rel=1e-6)


def test_report_files(setup, tmp_path):
    model, task, circuit = setup
    r = faithfulness.evaluate(model, circuit, task, checks=["losses", "nodes"], n_pairs=8, progress=False)
    loaded = faithfulness.FaithfulnessReport.load(r.save(tmp_path / "r.json"))
    assert loaded.metrics.keys() == r.metrics.keys() and loaded.flags == r.flags and loaded.nodes.keys() == r.nodes.keys()
    for name, row in r.nodes.items():
        assert all(loaded.nodes[name][k] == v or (v != v and loaded.nodes[name][k] != loaded.nodes[name][k]) for k, v in row.items())
    page = r.to_html(tmp_path / "r.html").read_text()
    assert "<svg" in page and "faithfulness" in page and "<script" not in page and "http" not in page.split("xmlns")[0]
    assert "<table>" in r._repr_html_()


def test_hostile_inputs(setup):
    model, task, circuit = setup
    with pytest.raises(KeyError, match="unknown faithfulness check 'adversarail'.*did you mean 'adversarial'"):
        faithfulness.evaluate(model, circuit, task, checks=["adversarail"], progress=False)
    plain = Task("quotes_without_ood", task.generator, list(task.target_ids), model.tokenizer)
    with pytest.raises(ValueError, match="has no 'ood' split"):
        faithfulness.evaluate(model, dataclasses.replace(circuit, task=plain.name), plain, checks=["ood"], n_pairs=4,
                              progress=False)
    other = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=256, d_vocab=2048), tokenizer=model.tokenizer)
    with pytest.raises(ValueError, match="different model"):
        faithfulness.evaluate(other, circuit, task, progress=False)
    with pytest.raises(ValueError, match="pruned on task 'single_double_quote', not 'with_as'"):
        faithfulness.evaluate(model, circuit, get_task("with_as", tokenizer=model.tokenizer), progress=False)
    broken = HookedSparseTransformer(model.cfg, tokenizer=model.tokenizer)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.unembed.W_U[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        faithfulness.evaluate(broken, dataclasses.replace(circuit, model_fingerprint=_fp(broken)), task, progress=False)


def _fp(model):
    from sparselens.model.fingerprint import model_fingerprint

    return model_fingerprint(model)


def test_ood_split_of_the_fixed_name_task_uses_the_varied_names():
    task = get_task("set_or_string_fixedvarname")
    assert "ood" in task.splits
    assert all(p.prompt_a.endswith(" current") for p in task.pairs(20, "test"))
    ood_names = {p.prompt_a.split()[-1] for p in task.pairs(40, "ood")}
    assert "current" not in ood_names and len(ood_names) > 3
    counting = get_task("bracket_counting")
    def elements(prompt):  # the literal on the prompt's last line: rows x width elements
        return prompt.splitlines()[-1].split(" = [", 1)[1].count(",") + 1

    assert min(elements(p.prompt_b) for p in counting.pairs(20, "ood")) >= 16 > 9 >= max(
        elements(p.prompt_b) for p in counting.pairs(20, "test"))


def test_faithful_pruning_runs_with_the_circuits_plain_ablation(setup):
    model, task, _ = setup
    means = setup[2].means_for(model)
    for kind in ("stochastic", "adversarial"):
        c = prune(model, task, 0.3, PruneConfig(ablation=kind, steps=4, batch_size=8, eval_pairs=16, train_pairs=64,
                                                adversary_steps=1), means=means, progress=False)
        assert c.ablation == "mean" and c.config["ablation"] == kind
        assert c.evaluate(model, task) == c.losses["circuit"]
    # the mask really is learned under partial ablation: with some nodes dropped (tau < 0 at init), the same
    # seed's first step sees another loss than plain mean ablation's
    from sparselens.prune import MaskTrainer

    losses = {}
    for kind in ("mean", "stochastic", "adversarial"):
        trainer = MaskTrainer(model, task, PruneConfig(ablation=kind, steps=4, batch_size=8, train_pairs=64,
                                                       adversary_steps=1, init_bias=0.0, init_noise=0.1), means)
        losses[kind] = float(trainer.step(trainer.batch(0))[0])
    assert losses["stochastic"] != losses["mean"] and losses["adversarial"] != losses["mean"]


def test_cli_writes_the_report(setup, tmp_path, capsys):
    from sparselens.cli import main

    model, task, circuit = setup
    model.save_pretrained(tmp_path / "model")
    path = circuit.save(tmp_path / "c.json")
    rc = main(["faithfulness", str(path), "--model", str(tmp_path / "model"), "--checks", "losses", "--pairs", "8",
               "--json", "-o", str(tmp_path / "r.html")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["loss_circuit"] >= 0 and (tmp_path / "r.html").exists() and (tmp_path / "r.json").exists()
    assert main(["faithfulness", str(path), "--model", str(tmp_path / "model"), "--checks", "nodse"]) == 2
    assert "did you mean 'nodes'" in capsys.readouterr().err
