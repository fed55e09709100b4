"""Steering a dense model through a sparse channel (issue 13, item 5): the edit, its controls, the RMS
ratio, the position sets, the circuit's channels, the report, and hostile inputs."""

import inspect
import json
import socket

import pytest
import torch
from conftest import randomize, tiny_config

from sparselens import HookedSparseTransformer
from sparselens.bridges import Bridges, add_hooks, bridge_sites, capture, circuit_residual_channels, replace_hooks, residual_rms_ratio, steer
from sparselens.errors import InputError, UnknownNameError
from sparselens.model.fingerprint import model_fingerprint
from sparselens.prune.circuit import Circuit
from sparselens.tasks.base import PromptPair, TaskBatch

SITE = "L1.resid_pre"
CHANNEL = 5
#: site -> the norm that receives the residual there, where the tests capture it (not the library's hook point)
READER = {"L1.resid_pre": lambda model: model.blocks[1].ln1, "L0.resid_mid": lambda model: model.blocks[0].ln2}


def make_pair():
    """(dense, sparse, bridges): dense d_model 48 (no AbsTopK), sparse d_model 32, random weights and decoder bias."""
    dense = randomize(HookedSparseTransformer(tiny_config(afrac=None, d_model=48, d_head=8, n_ctx=12, d_vocab=64)), seed=1)
    sparse = randomize(HookedSparseTransformer(tiny_config(d_model=32, d_head=8, n_ctx=12, d_vocab=64)), seed=2)
    bridges = Bridges.for_models(dense, sparse, seed=3)
    with torch.no_grad():
        bridges.W_dec.mul_(4.0)  # an edit big enough to move the dense model
        bridges.b_dec.normal_(0, 1.0)  # cancels in a difference
    return dense, sparse, bridges


@pytest.fixture(scope="module")
def models():
    return make_pair()


def pairs_batch():
    """3 right-padded pairs in 12 columns: equal lengths; B two tokens longer; A three tokens longer."""
    gen = torch.Generator().manual_seed(0)

    def toks(k):
        return torch.randint(1, 64, (k,), generator=gen).tolist()

    prefix0, prefix1, prefix2 = toks(4), toks(3), toks(2)
    suffix0, suffix1, suffix2 = toks(3), toks(3), toks(2)
    prompts = [
        ([0, *prefix0, 7, *suffix0], [0, *prefix0, 8, *suffix0]),  # pair 0: BOS p p p p 7|8 s s s, differs at position 5 only
        ([0, *prefix1, 7, *suffix1], [0, *prefix1, 8, 9, 10, *suffix1]),  # pair 1: differing span 1 vs 3 tokens
        ([0, *prefix2, 7, 9, 10, 11, *suffix2], [0, *prefix2, 8, *suffix2]),  # pair 2: span 4 vs 1 tokens
    ]
    rows = [a for a, _ in prompts] + [b for _, b in prompts]
    tokens = torch.zeros(6, 12, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    read_pos = torch.tensor([len(r) - 1 for r in rows])
    ids_a, ids_b = torch.tensor([11, 12, 13]), torch.tensor([21, 22, 23])
    pairs = [PromptPair(f"a{i}", f"b{i}", "x", "y") for i in range(3)]
    return TaskBatch(tokens, read_pos, torch.cat([ids_a, ids_b]), torch.cat([ids_b, ids_a]), pairs)


def hand_alignment(batch):
    """Per pair: {A position: B position} where the edit goes, and the first differing position (as the docstring says)."""
    n, out = batch.n_pairs, []
    for i in range(n):
        a, b = batch.tokens[i].tolist(), batch.tokens[n + i].tolist()
        read_a, read_b = int(batch.read_pos[i]), int(batch.read_pos[n + i])
        shared = min(read_a, read_b)
        first = next((t for t in range(shared + 1) if a[t] != b[t]), shared + 1)
        partner = {}
        for t in range(read_a + 1):
            if t < first:
                partner[t] = t
            elif first <= t + read_b - read_a <= read_b:
                partner[t] = t + read_b - read_a
        out.append((partner, first, read_a))
    return out


@torch.no_grad()
def hand_ratio(dense, sparse, hook, tokens):
    h_d = dense.run_with_cache(tokens)[1][hook].double()
    h_s = sparse.run_with_cache(tokens)[1][hook].double()
    return float(h_d.pow(2).mean().sqrt() / h_s.pow(2).mean().sqrt())


@torch.no_grad()
def hand_edit(sparse, bridges, batch, channel, strength, ratio, site=SITE):
    """strength * ratio * (h^s_B[t', c] - h^s_A[t, c]) * W_dec[site][c], in loops."""
    n, hook, index = batch.n_pairs, bridges.site(site).hook_name, bridges.site(site).index
    h = sparse.run_with_cache(batch.tokens)[1][hook]
    edit = torch.zeros(n, batch.tokens.shape[1], bridges.cfg.d_dense)
    for i, (partner, _, _) in enumerate(hand_alignment(batch)):
        for t, t_b in partner.items():
            edit[i, t] = strength * ratio * (h[n + i, t_b, channel] - h[i, t, channel]) * bridges.W_dec[index, channel]
    return edit


@torch.no_grad()
def p_target_by_hand(logits, batch):
    n = batch.n_pairs
    rows = torch.arange(n)
    return float(torch.softmax(logits[rows, batch.read_pos[:n]].float(), -1)[rows, batch.correct[n:]].double().mean())


class ResidualRecorder:
    """Records the residual at ``site`` as the norm after it receives it: a torch pre-hook, not the library's."""

    def __init__(self, model, site):
        self.seen = []
        self.handle = READER[site](model).register_forward_pre_hook(lambda module, args: self.seen.append(args[0].detach().clone()))

    def close(self):
        self.handle.remove()


# ---------------------------------------------------------------------------- the edit and its controls


@torch.no_grad()
def test_strength_zero_is_exactly_the_unedited_dense_model(models):
    dense, sparse, bridges = models
    batch = pairs_batch()
    result = steer(dense, sparse, bridges, SITE, CHANNEL, batch, [0.0, 1.0], progress=False)
    unedited = p_target_by_hand(dense(batch.tokens[:3]), batch)
    assert float(result.p_target[0]) == float(result.p_target_random_dense[0]) == float(result.p_target_random_channel[0]) == unedited
    for kl in (result.kl_unrelated, result.kl_unrelated_random_dense, result.kl_unrelated_random_channel, result.kl_before_difference):
        assert kl[0] == 0
    assert abs(float(result.p_target[1]) - unedited) > 1e-4 and result.kl_unrelated[1] > 0  # the edit does something
    rows, logits_b = torch.arange(3), dense(batch.tokens[3:])  # the B prompts, read for their own answer
    p_b = torch.softmax(logits_b[rows, batch.read_pos[3:]].float(), -1)[rows, batch.correct[3:]].double().mean()
    assert result.p_target_counterfactual == float(p_b)


@pytest.mark.parametrize("site", list(READER))
def test_the_edit_and_both_controls_added_at_the_site_match_a_hand_computation(models, site):
    dense, sparse, bridges = models
    batch = pairs_batch()
    hook = bridges.site(site).hook_name
    base = dense.run_with_cache(batch.tokens[:3])[1][hook]
    base_b = dense.run_with_cache(batch.tokens[3:])[1][hook]
    recorder = ResidualRecorder(dense, site)
    try:
        result = steer(dense, sparse, bridges, site, CHANNEL, batch, [0.7], seed=4, progress=False)
    finally:
        recorder.close()
    ratio = hand_ratio(dense, sparse, hook, batch.tokens)
    assert result.ratio == pytest.approx(ratio, rel=1e-6)
    expected = hand_edit(sparse, bridges, batch, CHANNEL, 0.7, ratio, site)
    control = hand_edit(sparse, bridges, batch, result.control_channel, 0.7, ratio, site)
    assert result.control_channel != CHANNEL and expected.abs().max() > 0.1
    # every dense forward on the A prompts (the B prompts' run is not an edit of them), minus the unedited residual
    added = [x - base for x in recorder.seen if x.shape == base.shape and not torch.equal(x, base_b)]
    assert len(added) == 4  # unedited, the edit and the two controls

    def close(d, target):
        return torch.allclose(d, target, atol=1e-5, rtol=1e-4)

    zero = torch.zeros_like(base)
    for target in (zero, expected, control):
        assert sum(close(d, target) for d in added) == 1
    (random,) = [d for d in added if not any(close(d, t) for t in (zero, expected, control))]
    edited_positions = expected.norm(dim=-1) > 0
    torch.testing.assert_close(random.norm(dim=-1), expected.norm(dim=-1), atol=1e-5, rtol=1e-4)  # norm-matched per token
    cosine = torch.nn.functional.cosine_similarity(random[edited_positions], expected[edited_positions], dim=-1)
    assert cosine.abs().max() < 0.9  # another direction


def test_the_random_controls_are_seeded(models):
    dense, sparse, bridges = models
    batch = pairs_batch()
    a = steer(dense, sparse, bridges, SITE, CHANNEL, batch, [1.0], seed=1, progress=False)
    b = steer(dense, sparse, bridges, SITE, CHANNEL, batch, [1.0], seed=1, progress=False)
    c = steer(dense, sparse, bridges, SITE, CHANNEL, batch, [1.0], seed=2, progress=False, control_channel=9)
    assert a.to_dict() == b.to_dict() and c.control_channel == 9
    assert not torch.equal(a.p_target_random_dense, c.p_target_random_dense)
    assert torch.equal(a.p_target, c.p_target)  # the edit itself does not depend on the seed


def test_rms_ratio_is_dense_over_sparse_as_computed_by_hand(models):
    dense, sparse, _ = models
    tokens = torch.randint(0, 64, (5, 12), generator=torch.Generator().manual_seed(7))
    for site in ("L0.resid_pre", "blocks.0.hook_resid_mid", 4):
        hook = {"L0.resid_pre": "blocks.0.hook_resid_pre", 4: "blocks.1.hook_resid_post"}.get(site, site)
        got = residual_rms_ratio(dense, sparse, site, tokens, batch_size=2)  # three uneven batches
        assert got == pytest.approx(hand_ratio(dense, sparse, hook, tokens), rel=1e-9)
    assert residual_rms_ratio(sparse, sparse, SITE, tokens) == 1.0


def gpt2_bridge():
    """A TransformerLens 4 TransformerBridge of a 2-layer GPT-2 built from a local config (no network)."""
    import transformers
    from transformer_lens.model_bridge import TransformerBridge

    from sparselens.data import load_tokenizer

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=2048, n_positions=64, attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(config).eval()

    def refuse(*args, **kwargs):
        raise OSError("no network in these tests")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        return TransformerBridge.boot_transformers("gpt2", hf_model=hf, tokenizer=load_tokenizer(), device="cpu")


@torch.no_grad()
def test_an_added_edit_shifts_the_residual_stream_at_every_site_on_both_model_classes(models):
    """add_hooks(site, v) is the run with the residual there replaced by its own value plus v; on a TransformerBridge too,
    whose hook_resid_mid feeds only the MLP's norm (adding there alone would miss the skip connection)."""
    bridge = gpt2_bridge()
    tokens = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(5))
    for model in (models[0], bridge):
        _, own = capture(model, tokens, bridge_sites(2))
        plain = model.run_with_hooks(tokens, fwd_hooks=[])
        for site in bridge_sites(2):
            v = torch.randn(own[site.hook_name].shape, generator=torch.Generator().manual_seed(site.index))
            added = model.run_with_hooks(tokens, fwd_hooks=add_hooks(site, v))
            torch.testing.assert_close(added, model.run_with_hooks(tokens, fwd_hooks=replace_hooks(site, own[site.hook_name] + v)),
                                       atol=1e-5, rtol=1e-5)
            assert not torch.allclose(added, plain, atol=1e-3), site
            assert torch.equal(model.run_with_hooks(tokens, fwd_hooks=add_hooks(site, torch.zeros_like(v))), plain), site
    # steering a TransformerBridge at a mid site: s = 0 is its own run, s = 1 the hand-computed edit
    sparse = randomize(HookedSparseTransformer(tiny_config(d_model=32, d_head=8, n_ctx=12, d_vocab=2048)), seed=2)
    bridges = Bridges.for_models(bridge, sparse, seed=3)
    batch = pairs_batch()
    result = steer(bridge, sparse, bridges, "L0.resid_mid", CHANNEL, batch, [0.0, 1.0], ratio=10.0, progress=False)
    assert float(result.p_target[0]) == p_target_by_hand(bridge(batch.tokens[:3]), batch)
    _, own = capture(bridge, batch.tokens[:3], [bridges.site("L0.resid_mid")])
    edit = hand_edit(sparse, bridges, batch, CHANNEL, 1.0, 10.0, "L0.resid_mid")
    edited = bridge.run_with_hooks(batch.tokens[:3], fwd_hooks=replace_hooks(bridges.site(1), own["blocks.0.hook_resid_mid"] + edit))
    assert float(result.p_target[1]) == pytest.approx(p_target_by_hand(edited, batch), rel=1e-5)
    assert float(result.p_target[1]) != pytest.approx(float(result.p_target[0]), rel=1e-3)


# ---------------------------------------------------------------------------- the position sets and the KL


def test_pairs_are_aligned_at_the_start_then_at_the_read_position():
    batch = pairs_batch()
    (p0, first0, _), (p1, first1, read1), (p2, first2, read2) = hand_alignment(batch)
    assert first0 == 5 and p0 == {t: t for t in range(9)}  # equal lengths: position by position
    assert first1 == 4 and p1[read1] == int(batch.read_pos[4]) and p1[4] == 6 and 3 in p1  # the span's last token
    assert first2 == 3 and p2[read2] == int(batch.read_pos[5]) and 4 not in p2 and p2[6] == 3  # extra A tokens: no edit


@torch.no_grad()
def test_kl_is_zero_before_the_first_difference_and_measured_at_unrelated_positions(models):
    dense, sparse, bridges = models
    batch = pairs_batch()
    result = steer(dense, sparse, bridges, SITE, CHANNEL, batch, [0.0, 0.5, 1.0], progress=False)
    alignment = hand_alignment(batch)
    assert result.n_before == sum(first for _, first, _ in alignment)
    unrelated = torch.zeros(3, 12, dtype=torch.bool)
    for i, (partner, first, read_a) in enumerate(alignment):
        for t in partner:
            unrelated[i, t] = t >= first and t != read_a
    assert result.n_unrelated == int(unrelated.sum()) == 3 + 3 + 2 and result.n_before == 5 + 4 + 3
    assert torch.equal(result.kl_before_difference, torch.zeros(3))  # the edit is zero there: causality
    ratio = hand_ratio(dense, sparse, bridges.site(SITE).hook_name, batch.tokens)
    plain = dense(batch.tokens[:3])
    for j, s in enumerate((0.5, 1.0)):
        edit = hand_edit(sparse, bridges, batch, CHANNEL, s, ratio)
        edited = dense.run_with_hooks(batch.tokens[:3], fwd_hooks=[(bridges.site(SITE).hook_name, lambda act, hook: act + edit)])
        p_log, q_log = torch.log_softmax(plain.double(), -1), torch.log_softmax(edited.double(), -1)
        kl = (p_log.exp() * (p_log - q_log)).sum(-1)
        assert float(result.kl_unrelated[j + 1]) == pytest.approx(float(kl[unrelated].mean()), rel=1e-4, abs=1e-7)
        assert float(result.p_target[j + 1]) == pytest.approx(p_target_by_hand(edited, batch), rel=1e-5)


# ---------------------------------------------------------------------------- choosing a channel


def hand_circuit(model, kept):
    return Circuit(kept=kept, edge_counts={}, residual_links=0, task="t", target_ids=(), input_ids=(), n_positions=1,
                   ablation="zero", freeze_norms=False, losses={}, model_fingerprint=model_fingerprint(model))


def test_circuit_residual_channels_reads_at_or_after_the_site_and_writes_at_the_end():
    sparse = make_pair()[1]
    kept = {"L0.attn_in": [1, 2], "L0.mlp_out": [3], "L0.neuron": [0], "L1.mlp_in": [4], "L1.attn_out": [5], "L1.q": [6]}
    circuit = hand_circuit(sparse, kept)
    assert circuit_residual_channels(circuit, sparse) == [1, 2, 3, 4, 5]  # not the neuron's or Q's indices
    assert circuit_residual_channels(circuit, sparse, "L0.resid_pre") == [1, 2, 4]
    assert circuit_residual_channels(circuit, sparse, 1) == [4]  # block 0's attn_in reads before L0.resid_mid
    assert circuit_residual_channels(circuit, sparse, "L1.resid_mid") == [4]
    assert circuit_residual_channels(circuit, sparse, "final") == [3, 5]
    with torch.no_grad():
        sparse.blocks[1].ln2.w[4] = 0.0  # the read sees nothing through a zero gain
    assert circuit_residual_channels(hand_circuit(sparse, kept), sparse, 1) == []
    with pytest.raises(ValueError, match="different model"):
        circuit_residual_channels(circuit, sparse)  # the weights changed: another model
    with pytest.raises(UnknownNameError, match="did you mean 'final'"):
        circuit_residual_channels(hand_circuit(sparse, kept), sparse, "finl")


def test_the_docs_recipe_picks_a_circuit_channel_and_steers_on_a_real_task():
    from sparselens.data import load_tokenizer
    from sparselens.tasks import get_task

    shapes = dict(d_head=8, n_ctx=64, d_vocab=2048)
    dense = randomize(HookedSparseTransformer(tiny_config(afrac=None, d_model=48, **shapes)), seed=1)
    sparse = randomize(HookedSparseTransformer(tiny_config(d_model=32, **shapes)), seed=2)
    bridges = Bridges.for_models(dense, sparse)
    circuit = hand_circuit(sparse, {"L1.attn_in": [2, 9, 17], "L0.mlp_out": [9, 30], "L1.mlp_in": [25]})
    task = get_task("single_double_quote", tokenizer=load_tokenizer())
    batch = task.batch(n=4, split="test")
    # docs/bridges.md, "Steering": the circuit channel that differs most between A and B at the read position
    site = bridges.site("L1.resid_pre")
    channels = circuit_residual_channels(circuit, sparse, site)
    _, h = capture(sparse, batch.tokens, [site])
    h, n = h[site.hook_name][:, :, channels], batch.n_pairs
    rows = torch.arange(n)
    moved = (h[n + rows, batch.read_pos[n:]] - h[rows, batch.read_pos[:n]]).abs().mean(0)
    channel = channels[int(moved.argmax())]
    assert channels == [2, 9, 17, 25] and moved.max() > 0
    result = steer(dense, sparse, bridges, site, channel, batch, [0.0, 1.0], reference_tokens=batch.tokens[:n], progress=False)
    assert result.n_pairs == 4 and result.n_before > 0 and result.n_unrelated > 0
    assert torch.equal(result.kl_before_difference, torch.zeros(2)) and result.kl_unrelated[1] > 0
    assert all(0 < float(p) < 1 for p in (*result.p_target, *result.p_target_random_dense, *result.p_target_random_channel))


# ---------------------------------------------------------------------------- the report


def test_table_plot_and_json(models, tmp_path):
    dense, sparse, bridges = models
    default = inspect.signature(steer).parameters["strengths"].default
    assert default.tolist() == pytest.approx([i / 10 for i in range(11)])
    result = steer(dense, sparse, bridges, SITE, CHANNEL, pairs_batch(), [0.0, 0.5, 1.0], progress=False)
    table = result.table()
    assert table.count("\n| ") == 4 and "| 0.50 |" in table and "rms_dense/rms_sparse" in table
    fig = result.plot(tmp_path / "steering.png")
    assert (tmp_path / "steering.png").stat().st_size > 10_000 and len(fig.axes) == 2
    assert not list(tmp_path.glob("*.tmp*"))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["site"] == "blocks.1.hook_resid_pre" and data["channel"] == CHANNEL and len(data["p_target"]) == 3


# ---------------------------------------------------------------------------- hostile inputs


def test_hostile_inputs_are_refused_with_the_reason(models):
    dense, sparse, bridges = models
    batch = pairs_batch()
    with pytest.raises(InputError, match="channel 32 is out of range: the sparse residual has channels 0..31"):
        steer(dense, sparse, bridges, SITE, 32, batch, progress=False)
    with pytest.raises(InputError, match="channel -1 is out of range"):
        steer(dense, sparse, bridges, SITE, -1, batch, progress=False)
    with pytest.raises(InputError, match=r"strengths must lie in \[0, 1\].*\[1.5\]"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch, [0.0, 1.5], progress=False)
    with pytest.raises(InputError, match=r"strengths must lie in \[0, 1\].*nan"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch, [float("nan")], progress=False)
    with pytest.raises(InputError, match="non-empty 1-D"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch, [], progress=False)
    with pytest.raises(InputError, match="needs a TaskBatch of prompt pairs"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch.tokens, progress=False)
    odd = TaskBatch(batch.tokens[:5], batch.read_pos[:5], batch.correct[:5], batch.wrong[:5], batch.pairs)
    with pytest.raises(InputError, match=r"the batch is not pairs: 3 pairs need 2n = 6 token rows"):
        steer(dense, sparse, bridges, SITE, CHANNEL, odd, progress=False)
    left = TaskBatch(batch.tokens, batch.read_pos, batch.correct, batch.wrong, batch.pairs, padding_side="left")
    with pytest.raises(InputError, match="padding_side='right'"):
        steer(dense, sparse, bridges, SITE, CHANNEL, left, progress=False)
    with pytest.raises(UnknownNameError, match="did you mean 'L1.resid_pre'"):
        steer(dense, sparse, bridges, "L1.resid_pr", CHANNEL, batch, progress=False)
    with pytest.raises(UnknownNameError, match="did you mean 'blocks.0.hook_resid_mid'"):
        residual_rms_ratio(dense, sparse, "blocks.0.hook_resid_mdi", batch.tokens)
    with pytest.raises(InputError, match="control_channel must differ"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch, control_channel=CHANNEL, progress=False)
    with pytest.raises(InputError, match="ratio must be a positive finite number"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch, ratio=-1.0, progress=False)
    with pytest.raises(InputError, match="not both"):
        steer(dense, sparse, bridges, SITE, CHANNEL, batch, ratio=1.0, reference_tokens=batch.tokens, progress=False)
    with pytest.raises(InputError, match=r"integer token tensor \[n_seq, pos\]"):
        residual_rms_ratio(dense, sparse, SITE, torch.zeros(2, 4))
    other = randomize(HookedSparseTransformer(tiny_config(afrac=None, d_model=48, d_head=8, n_ctx=12, d_vocab=64)), seed=9)
    with pytest.raises(InputError, match="fingerprint"):
        steer(other, sparse, bridges, SITE, CHANNEL, batch, progress=False)


@torch.no_grad()
def test_most_differing_channel_is_the_argmax_of_the_read_position_difference():
    """Against a hand computation: per channel the circuit reads, the mean |h_B - h_A| at the read positions."""
    from sparselens.bridges import most_differing_channel
    from sparselens.pretrained import SHIPPED_DIR
    from sparselens.tasks import get_task

    sparse = HookedSparseTransformer.from_pretrained("sparse-pygen-2l-128-bridged")  # the model the shipped bridges' circuit is of
    circuit = Circuit.load(SHIPPED_DIR / "bridges-pygen-2l-128" / "circuit.json")
    batch = get_task("single_double_quote", tokenizer=sparse.tokenizer).batch(n=8, split="test", seed=3)
    site = "L1.resid_pre"
    resid = sparse.run_with_cache(batch.tokens, names_filter="blocks.1.hook_resid_pre")[1]["blocks.1.hook_resid_pre"]
    n = batch.n_pairs
    scores = {}
    for c in circuit_residual_channels(circuit, sparse, site):
        diffs = [abs(float(resid[n + i, batch.read_pos[n + i], c] - resid[i, batch.read_pos[i], c])) for i in range(n)]
        scores[c] = sum(diffs) / n
    assert most_differing_channel(circuit, sparse, site, batch) == max(scores, key=scores.get)
    with pytest.raises(InputError, match="reads no residual channel"):
        most_differing_channel(circuit, sparse, "L1.resid_mid", batch)
