"""model.generate: greedy decoding equals a hand-written argmax loop, hooks act on every step,
sampling is seeded and restricted by top_k, end-of-text stops a row, and bad settings are refused."""

import pytest
import torch
from conftest import randomize, tiny_config

from sparselens import HookedSparseTransformer
from sparselens.data import load_tokenizer


@pytest.fixture(scope="module")
def model():
    tok = load_tokenizer()
    return randomize(HookedSparseTransformer(tiny_config(n_layers=2, d_model=32, d_head=8, n_ctx=16, d_vocab=2048), tokenizer=tok), seed=4)


def greedy_by_hand(model, tokens, n, hooks=()):
    for _ in range(n):
        logits = model.run_with_hooks(tokens[:, -model.cfg.n_ctx:], fwd_hooks=list(hooks))[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens


def test_greedy_is_the_argmax_loop_and_slides_the_context(model):
    prompt = torch.tensor([[5, 17, 99, 3], [8, 8, 8, 8]])
    out = model.generate(prompt, 20, temperature=0, stop_at_eos=False)  # 24 tokens > n_ctx 16: the window slides
    assert torch.equal(out, greedy_by_hand(model, prompt, 20))
    assert torch.equal(model.generate(prompt, 5, temperature=1.0, top_k=1, stop_at_eos=False), greedy_by_hand(model, prompt, 5))


def test_hooks_act_on_every_step(model):
    prompt = torch.tensor([[5, 17, 99, 3]])
    kill = [("blocks.1.hook_mlp_out", lambda act, hook: torch.zeros_like(act))]
    hooked = model.generate(prompt, 6, temperature=0, fwd_hooks=kill, stop_at_eos=False)
    assert torch.equal(hooked, greedy_by_hand(model, prompt, 6, kill))
    assert not torch.equal(hooked, model.generate(prompt, 6, temperature=0, stop_at_eos=False))
    assert len(model.hook_dict["blocks.1.hook_mlp_out"].fwd_hooks) == 0  # removed afterwards
    with model.hooks(fwd_hooks=kill):  # hooks already in place act too
        assert torch.equal(model.generate(prompt, 6, temperature=0, stop_at_eos=False), hooked)


def test_sampling_is_seeded_and_top_k_restricted(model):
    prompt = torch.tensor([[5, 17, 99, 3]] * 8)
    a = model.generate(prompt, 4, seed=1, stop_at_eos=False)
    assert torch.equal(a, model.generate(prompt, 4, seed=1, stop_at_eos=False))
    out = model.generate(prompt, 1, top_k=3, seed=2, temperature=5.0, stop_at_eos=False)
    allowed = model(prompt)[:, -1].topk(3, dim=-1).indices
    assert all(int(t) in allowed[i].tolist() for i, t in enumerate(out[:, -1]))


def test_end_of_text_stops_and_pads_a_row(model):
    eos = model.tokenizer.eos_token_id
    with torch.no_grad():
        model.unembed.b_U[eos] += 1000.0  # the model now always says end-of-text
    try:
        out = model.generate(torch.tensor([[5, 17], [9, 9]]), 10, temperature=0)
        assert out.shape == (2, 3) and (out[:, -1] == eos).all()  # stopped after one step
        text = model.generate("def f", 3, temperature=0)
        assert text.startswith("def f") and text.endswith(model.tokenizer.eos_token)
    finally:
        with torch.no_grad():
            model.unembed.b_U[eos] -= 1000.0


@pytest.mark.parametrize("bad, message", [
    (dict(max_new_tokens=-1), "max_new_tokens"), (dict(temperature=-0.5), "temperature"), (dict(top_k=0), "top_k"),
])
def test_bad_settings_are_refused(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model.generate(torch.tensor([[1, 2]]), **{"max_new_tokens": 2, **bad})
