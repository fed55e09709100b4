"""A ground truth for the faithfulness suite (issue 12, item 9): a model built by hand whose task is
solved by a known path, plus a second path that a circuit can use only through what mean ablation
writes in. The suite must pass the circuit of the known path and flag the one that exploits the
ablation; and every metric is checked against its definition on the full and the empty circuit.

The model (1 layer, d_model 4, one MLP of 4 ReLU neurons, attention weights all zero, no AbsTopK):

- residual dims: 0 "sign", 1 "gate", 2 "answer", 3 a constant 1 that every token writes;
- the deciding token ``a`` writes sign +1, ``b`` writes sign -1, and both write gate -2; the filler
  tokens write a small sign (+-0.1, +-0.2 or 0) and no gate;
- neurons: n0 = relu(sign), n1 = relu(-sign) (the known path), and n2 = relu(sign + gate),
  n3 = relu(-sign + gate) (a copy of the sign detectors that the gate switches off on ``a`` and
  ``b``); n0 and n2 write +2 to the answer dim, n1 and n3 write -2; ``A`` unembeds the answer dim
  with +1.5, ``B`` with -1.5. The prompt is ``f f f f a`` (answer `` A``) or ``f f f f b`` (`` B``).

So in the model the answer comes from n0/n1 alone: on ``a`` and ``b`` the gate holds n2 and n3 at
exactly 0. The pretraining means (given explicitly, as a corpus where ``a`` and ``b`` are rare would
give them) are 0.1 for every neuron and -0.05 for the gate read ``mlp_in[1]``.

- TRUE circuit: ``mlp_in[0]`` (sign), n0, n1, ``mlp_out[2]``. The dropped n2 and n3 are written in
  at their means, which cancel in the answer dim, as their real values (0 and 0) do.
- EXPLOITING circuit: ``mlp_in[0]``, n2, n3, ``mlp_out[2]``. Mean ablation writes -0.05 for the gate
  instead of the model's -1.63 (after the norm), which switches n2/n3 on where the model has them
  off; n0 and n1 are written in at equal means that cancel. It reaches the model's loss only
  because of what the ablation writes in: restore the gate and its answer is gone.

Every expected value here comes from the hand-set weights, by reasoning or by a plain torch
computation of the same network (:func:`by_hand`), never from the suite's output.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import sparselens.faithfulness as faithfulness
from sparselens import HookedSparseTransformer, NodeMask, SparseTransformerConfig
from sparselens.divergence import kl
from sparselens.model.fingerprint import model_fingerprint
from sparselens.prune.circuit import Circuit
from sparselens.prune.edges import EdgeUse, count_edges, count_residual_links
from sparselens.tasks import TemplateTask

FILLERS = {"p1": 0.1, "p2": 0.2, "m1": -0.1, "m2": -0.2, "z": 0.0}  # token -> the sign it writes
VOCAB = ["<|endoftext|>", "a", "b", "A", "B", *FILLERS]
SIGN, GATE, ANSWER, CONST = range(4)
GATE_ON_DECIDER = -2.0
W_ANSWER, W_UNEMBED = 2.0, 1.5
EPS = 1e-5  # the config's RMSNorm epsilon
#: [d_model, d_mlp]: n0 = relu(sign), n1 = relu(-sign), n2 = relu(sign + gate), n3 = relu(-sign + gate)
W_IN = torch.tensor([[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 1.0, 1.0], [0.0] * 4, [0.0] * 4])
#: [d_mlp, d_model]: every neuron writes only the answer dim
W_OUT = torch.zeros(4, 4).index_put_((torch.arange(4), torch.full((4,), ANSWER)), torch.tensor([1.0, -1.0, 1.0, -1.0]) * W_ANSWER)
#: [d_model, d_vocab]: A and B read the answer dim
W_U = torch.zeros(4, len(VOCAB)).index_put_((torch.tensor([ANSWER, ANSWER]), torch.tensor([3, 4])), torch.tensor([W_UNEMBED, -W_UNEMBED]))
MEAN_GATE, MEAN_NEURON = -0.05, 0.1
TRUE_NODES = ["L0.mlp_in[0]", "L0.neuron[0]", "L0.neuron[1]", "L0.mlp_out[2]"]
EXPLOIT_NODES = ["L0.mlp_in[0]", "L0.neuron[2]", "L0.neuron[3]", "L0.mlp_out[2]"]
N_PAIRS = 32
LOG2 = math.log(2)


def embedding(filler_scale: float) -> torch.Tensor:
    E = torch.zeros(len(VOCAB), 4)
    E[:, CONST] = 1.0
    E[VOCAB.index("a"), [SIGN, GATE]] = torch.tensor([1.0, GATE_ON_DECIDER])
    E[VOCAB.index("b"), [SIGN, GATE]] = torch.tensor([-1.0, GATE_ON_DECIDER])
    for word, sign in FILLERS.items():
        E[VOCAB.index(word), SIGN] = filler_scale * sign
    return E


def word_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def sign_task(tokenizer) -> TemplateTask:
    return TemplateTask("ground_truth_sign", ["{f1} {f2} {f3} {f4} {x}"], targets=(" A", " B"), a={"x": ["a"]},
                        b={"x": ["b"]}, shared={f"f{i}": list(FILLERS) for i in range(1, 5)}, tokenizer=tokenizer)


def build(tokenizer, filler_scale: float = 1.0) -> HookedSparseTransformer:
    cfg = SparseTransformerConfig(n_layers=1, d_model=4, d_head=4, n_heads=1, d_mlp=4, n_ctx=8, d_vocab=len(VOCAB),
                                  act_fn="relu", afrac=None, eps=EPS, seed=0, device="cpu")
    model = HookedSparseTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # attention (q, k, v, o, biases) stays all zero: it writes nothing
        for norm in (model.blocks[0].ln1, model.blocks[0].ln2, model.ln_final):
            norm.w.fill_(1.0)
        model.embed.W_E.copy_(embedding(filler_scale))
        model.blocks[0].mlp.fc_in.weight.copy_(W_IN.T)
        model.blocks[0].mlp.fc_out.weight.copy_(W_OUT.T)
        model.unembed.weight.copy_(W_U.T)
    return model.eval()


def means(model) -> dict[str, list[float]]:
    out = {site.name: [0.0] * site.n_nodes for site in model.node_sites}
    out["L0.mlp_in"] = [0.0, MEAN_GATE, 0.0, 2.0]
    out["L0.neuron"] = [MEAN_NEURON] * 4
    return out


def circuit(model, task, nodes, ablation: str = "mean") -> Circuit:
    """A hand-made Circuit keeping ``nodes`` (the library builds one only inside ``prune``)."""
    mask = NodeMask.from_nodes(model.node_registry, nodes)
    use = EdgeUse(tuple(range(len(VOCAB))), tuple(task.target_ids.values()), 6)
    return Circuit(kept={name: vec.nonzero().flatten().tolist() for name, vec in mask.keep.items()},
                   edge_counts=count_edges(model, mask, use), residual_links=count_residual_links(model, mask),
                   task=task.name, target_ids=use.target_ids, input_ids=use.input_ids, n_positions=use.n_positions,
                   ablation=ablation, freeze_norms=False, losses={}, model_fingerprint=model_fingerprint(model),
                   means=means(model))


def rms(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS)


def by_hand(tokens, E, mlp_in=None, neuron=None):
    """The network in plain torch, with channels replaced: ``{channel: value}`` for ``mlp_in`` / ``neuron``.

    Returns ``(logits [row, pos, vocab], neurons [row, pos, 4])``. Attention is left out: its weights
    are zero, so it writes nothing.
    """
    x = rms(E[tokens])
    for channel, value in (mlp_in or {}).items():
        x[..., channel] = value
    post = torch.relu(x @ W_IN)
    for channel, value in (neuron or {}).items():
        post[..., channel] = value
    resid = E[tokens] + post @ W_OUT  # mlp_out channels 0, 1, 3 are 0 in every run (and their means are 0)
    return rms(resid) @ W_U, post


def binary_loss(logits, batch) -> float:
    read = logits[torch.arange(len(batch.read_pos)), batch.read_pos]
    per_row = F.softplus(read.gather(-1, batch.wrong[:, None]) - read.gather(-1, batch.correct[:, None])).squeeze(-1)
    return float(per_row.view(2, -1).mean(0).mean())


def at_read(logits, batch):
    return logits[torch.arange(len(batch.read_pos)), batch.read_pos]


def flagged(report, words: str) -> bool:
    return any(words in f for f in report.flags)


@pytest.fixture(scope="module")
def world():
    tok = word_tokenizer()
    task = sign_task(tok)
    model = build(tok)
    batch = task.batch(n=N_PAIRS, split="test", seed=0)  # the pairs evaluate() measures on
    reports = {name: faithfulness.evaluate(model, circuit(model, task, nodes), task, n_pairs=N_PAIRS, progress=False)
               for name, nodes in (("true", TRUE_NODES), ("exploit", EXPLOIT_NODES))}
    return model, task, batch, reports


# ------------------------------------------------------------------------------------ the ground truth
def test_the_hand_built_model_does_the_task_by_the_known_path(world):
    model, task, batch, _ = world
    E = embedding(1.0)
    assert (batch.read_pos == 5).all() and (batch.tokens[:, 5] == torch.tensor([1] * N_PAIRS + [2] * N_PAIRS)).all()
    hand, post = by_hand(batch.tokens, E)
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.tokens)
    assert torch.allclose(logits, hand, atol=1e-5)  # the library's forward is the network written above
    assert torch.equal(cache["blocks.0.hook_attn_out"], torch.zeros_like(cache["blocks.0.hook_attn_out"]))
    # on the deciding token the gate holds n2 and n3 at exactly 0: the answer comes from n0/n1 alone
    assert torch.equal(post[:, 5, 2:], torch.zeros(2 * N_PAIRS, 2))
    assert (post[:N_PAIRS, 5, 0] > 0.8).all() and (post[N_PAIRS:, 5, 1] > 0.8).all()
    assert float(task.accuracy_from_logits(logits, batch)) == 1.0
    # ... while on the fillers (no gate) n2 is a copy of n0: in the model it detects the sign there
    assert torch.equal(post[:, 1:5, 2], post[:, 1:5, 0]) and float(post[:, 1:5, 2].max()) > 0.3


def test_the_true_circuit_passes(world):
    model, task, batch, reports = world
    r = reports["true"]
    m = r.metrics
    E = embedding(1.0)
    model_logits, _ = by_hand(batch.tokens, E)
    loss_model = binary_loss(model_logits, batch)
    assert m["loss_model"] == pytest.approx(loss_model, abs=1e-6) and 0.02 < loss_model < 0.05
    # empty circuit: every node at its mean; the answer dim gets mean(mlp_out[2]) = 0, so A and B tie
    assert m["loss_empty"] == pytest.approx(LOG2, abs=1e-6)
    # on the deciding token the dropped n2, n3 are 0 in the model and 0.1 - 0.1 in the circuit: the same logits
    circ_logits, _ = by_hand(batch.tokens, E, mlp_in={GATE: MEAN_GATE, 2: 0.0, CONST: 2.0},
                             neuron={2: MEAN_NEURON, 3: MEAN_NEURON})
    assert torch.allclose(at_read(circ_logits, batch), at_read(model_logits, batch), atol=1e-6)
    assert m["loss_circuit"] == pytest.approx(loss_model, abs=1e-6)
    assert m["faithfulness"] == pytest.approx(1.0, abs=1e-5) and m["kl_answer"] == pytest.approx(0.0, abs=1e-6)
    assert m["argmax_agreement"] == 1.0
    # on the fillers the circuit lacks n2 - n3 (= the filler's sign): kl_all is small, not 0
    assert m["kl_all"] == pytest.approx(float(kl(model_logits, circ_logits).mean()), rel=1e-4) and 0 < m["kl_all"] < 0.1
    # zero or resample ablation of n2/n3 writes their real value on the deciding token (0): the model's loss
    assert m["loss_under_zero"] == pytest.approx(loss_model, abs=1e-6)
    assert m["loss_under_resample"] == pytest.approx(loss_model, abs=1e-6)
    # An adversary can only (a) reopen the gate, which makes n2/n3 agree with n0/n1 (more confident), or
    # (b) unbalance the means of n2 and n3, moving the answer dim by at most W * 0.1. The worst it can do
    # to an A prompt is to take 0.1 * W off its answer dim (and to a B prompt, add it); both at once is a bound.
    worst_a, _ = by_hand(batch.tokens, E, mlp_in={GATE: MEAN_GATE}, neuron={2: 0.0, 3: MEAN_NEURON})
    worst_b, _ = by_hand(batch.tokens, E, mlp_in={GATE: MEAN_GATE}, neuron={2: MEAN_NEURON, 3: 0.0})
    bound = (binary_loss(worst_a, batch) + binary_loss(worst_b, batch)) / 2
    assert m["loss_circuit"] - 1e-6 <= m["adversarial_loss"] <= bound + 1e-6
    assert bound < m["loss_circuit"] + 0.02  # so the adversarial loss is near the circuit's loss
    for kind in ("uniform", "bernoulli"):
        assert m[f"stochastic_{kind}_loss_p95"] <= bound + 1e-6
    # every kept node does in the circuit what it does in the model
    assert m["node_corr_min"] > 0.9 and not any(row["repurposed"] for row in r.nodes.values())
    assert set(r.nodes) == set(TRUE_NODES)
    assert r.flags == []


def test_the_exploiting_circuit_is_flagged(world):
    model, task, batch, reports = world
    r = reports["exploit"]
    m = r.metrics
    E = embedding(1.0)
    model_logits, model_post = by_hand(batch.tokens, E)
    # the circuit: gate written at its mean (-0.05), n0 and n1 at theirs (0.1 each: they cancel)
    circ_logits, circ_post = by_hand(batch.tokens, E, mlp_in={GATE: MEAN_GATE, 2: 0.0, CONST: 2.0},
                                     neuron={0: MEAN_NEURON, 1: MEAN_NEURON})
    loss_circuit = binary_loss(circ_logits, batch)
    assert m["loss_circuit"] == pytest.approx(loss_circuit, abs=1e-6)
    # by its loss it is as good as the true circuit: that is what makes it a trap
    assert loss_circuit < m["loss_model"] + 0.01 and m["faithfulness"] > 0.98 and m["argmax_agreement"] == 1.0
    assert m["kl_answer"] == pytest.approx(float(kl(at_read(model_logits, batch), at_read(circ_logits, batch)).mean()), rel=1e-4)
    assert m["kl_all"] == pytest.approx(float(kl(model_logits, circ_logits).mean()), rel=1e-4)
    # zero ablation writes gate 0: n2, n3 become exactly n0, n1, so the loss is the model's ...
    assert m["loss_under_zero"] == pytest.approx(m["loss_model"], abs=1e-6)
    # ... resample ablation writes the OTHER prompt's n0, n1 and its gate (-1.63, n2 and n3 off): the answer flips
    margin = (at_read(model_logits, batch)[:, 3] - at_read(model_logits, batch)[:, 4]).abs()  # the model's, > 0
    assert m["loss_under_resample"] == pytest.approx(float(F.softplus(margin).mean()), abs=1e-5)  # the margin, reversed
    assert flagged(r, "Under resample ablation")
    # Restoring the gate (r = 1 for mlp_in[1]) switches n2 and n3 off; with n0/n1 still at their cancelling
    # means A and B tie: loss log 2. No r does worse, since every restored value only adds evidence for the
    # right answer or cancels. So the worst case is log 2, far above the circuit's loss.
    gate_restored, _ = by_hand(batch.tokens, E, mlp_in={2: 0.0, CONST: 2.0}, neuron={0: MEAN_NEURON, 1: MEAN_NEURON})
    assert binary_loss(gate_restored, batch) == pytest.approx(LOG2, abs=1e-6)
    assert m["adversarial_loss"] <= LOG2 + 1e-6 and m["adversarial_loss"] > 0.6 > 10 * m["loss_circuit"]
    assert flagged(r, "An adversary that partly restores the nodes outside the circuit")
    # under random partial restoration the gate often comes back and the answer with it goes
    assert m["stochastic_uniform_loss_mean"] > 2 * m["loss_circuit"]
    # n2 detects the sign of the fillers in the model (and is 0 on the deciding token); in the circuit it
    # detects the deciding token instead: repurposed
    for j, name in ((2, "L0.neuron[2]"), (3, "L0.neuron[3]")):  # every prompt has 6 tokens: all positions count
        a, b = model_post[..., j].flatten().double(), circ_post[..., j].flatten().double()
        expected = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert r.nodes[name]["corr"] == pytest.approx(expected, abs=1e-6) and expected < 0.5
        assert r.nodes[name]["repurposed"]
    assert r.nodes["L0.mlp_in[0]"]["corr"] == pytest.approx(1.0) and not r.nodes["L0.mlp_in[0]"]["repurposed"]
    assert m["node_corr_min"] < 0.5
    assert flagged(r, "repurposed") and "L0.neuron[2]" in next(f for f in r.flags if "repurposed" in f)


def test_a_neuron_dead_in_the_model_but_alive_in_the_circuit_is_repurposed():
    """With fillers that write no sign, n2 and n3 are 0 at every position of every task prompt: their
    correlation with the circuit is undefined, and they are the most repurposed nodes there are."""
    tok = word_tokenizer()
    task, model = sign_task(tok), build(tok, filler_scale=0.0)
    batch = task.batch(n=N_PAIRS, split="test", seed=0)
    _, post = by_hand(batch.tokens, embedding(0.0))
    assert torch.equal(post[..., 2:], torch.zeros_like(post[..., 2:]))  # dead in the model on the task
    checks = ["losses", "nodes"]
    true = faithfulness.evaluate(model, circuit(model, task, TRUE_NODES), task, checks=checks, n_pairs=N_PAIRS, progress=False)
    assert true.metrics["kl_all"] == pytest.approx(0.0, abs=1e-6) and true.metrics["node_corr_min"] == pytest.approx(1.0)
    assert true.flags == [] and not any(row["repurposed"] for row in true.nodes.values())
    expl = faithfulness.evaluate(model, circuit(model, task, EXPLOIT_NODES), task, checks=checks, n_pairs=N_PAIRS, progress=False)
    for name in ("L0.neuron[2]", "L0.neuron[3]"):
        row = expl.nodes[name]
        assert math.isnan(row["corr"]) and row["constant"] and row["constant_in"] == "model" and row["repurposed"]
    assert flagged(expl, "constant in the model")
    assert expl.metrics["node_corr_min"] == pytest.approx(1.0)  # over the nodes whose correlation is defined: no help here


# ------------------------------------------------------------------------------ metrics by definition
def test_every_metric_of_the_full_circuit_is_at_its_definition(world):
    """Nothing outside the full circuit: every ablation, interpolation and adversary leaves it the model."""
    model, task, _, _ = world
    full = circuit(model, task, [n.name for n in model.node_registry.nodes()])
    r = faithfulness.evaluate(model, full, task, n_pairs=8, progress=False)
    m = r.metrics
    assert m["loss_circuit"] == m["loss_model"] and m["faithfulness"] == 1.0
    assert m["kl_answer"] == 0.0 and m["kl_all"] == 0.0 and m["argmax_agreement"] == 1.0
    for key in ("loss_under_zero", "loss_under_resample", "adversarial_loss", "stochastic_uniform_loss_mean",
                "stochastic_uniform_loss_p95", "stochastic_bernoulli_loss_mean", "stochastic_bernoulli_loss_p95"):
        assert m[key] == m["loss_model"], key
    assert m["adversarial_kl"] == 0.0 and m["attention_js_max"] == 0.0
    assert m["node_corr_min"] == pytest.approx(1.0) and m["node_corr_median"] == pytest.approx(1.0)
    assert r.flags == []


def test_the_empty_circuit_is_at_its_definition(world):
    model, task, _, _ = world
    r = faithfulness.evaluate(model, circuit(model, task, []), task, checks=["losses", "nodes", "attention"], n_pairs=8,
                              progress=False)
    m = r.metrics
    assert m["loss_circuit"] == m["loss_empty"] == pytest.approx(LOG2, abs=1e-6) and m["faithfulness"] == 0.0
    assert m["argmax_agreement"] == 0.0  # A and B tie with every other token at 0: argmax is token 0, the model's is A or B
    for key in ("node_corr_min", "node_corr_median", "attention_js_max"):
        assert math.isnan(m[key]) and any(note.startswith(f"{key} is NaN") for note in r.notes)


def test_loss_under_each_ablation_is_that_ablations_circuit_loss(world):
    """``loss_under_<a>`` of a circuit is the loss the same nodes reach when pruned with ``a``."""
    model, task, _, reports = world
    for name, nodes in (("true", TRUE_NODES), ("exploit", EXPLOIT_NODES)):
        mean_report = reports[name]
        zero = faithfulness.evaluate(model, circuit(model, task, nodes, ablation="zero"), task, checks=["losses"],
                                     n_pairs=N_PAIRS, progress=False)
        assert "loss_under_zero" not in zero.metrics
        assert zero.metrics["loss_circuit"] == pytest.approx(mean_report.metrics["loss_under_zero"], abs=1e-7)
        assert zero.metrics["loss_under_mean"] == pytest.approx(mean_report.metrics["loss_circuit"], abs=1e-7)
        assert zero.metrics["loss_under_resample"] == pytest.approx(mean_report.metrics["loss_under_resample"], abs=1e-7)
