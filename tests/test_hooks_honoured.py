"""Hooks never silently do nothing: whatever a hook leaves at a hook point (returned, or edited in
place) is what the forward pass uses; hooks that only read change nothing, bit for bit."""

import pytest
import torch
from conftest import randomize, tiny_config

from sparselens import HookedSparseTransformer


@pytest.fixture
def sink_model() -> HookedSparseTransformer:
    return randomize(HookedSparseTransformer(tiny_config(attn_sink=True)))


@pytest.mark.parametrize("in_place", [False, True])
def test_an_edited_norm_scale_is_what_the_norm_divides_by(any_model, tokens, in_place):
    model = any_model

    def double(scale, hook):
        if in_place:
            scale.mul_(2)
            return None
        return scale * 2

    seen = {}
    hooks = [("blocks.1.ln1.hook_scale", double),
             ("blocks.1.hook_resid_pre", lambda x, hook: seen.setdefault("resid", x.clone())),
             ("blocks.1.ln1.hook_normalized", lambda x, hook: seen.setdefault("normed", x.clone()))]
    edited = model.run_with_hooks(tokens, fwd_hooks=hooks)
    resid = seen["resid"]
    by_hand = resid / (2 * (resid.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()) * model.blocks[1].ln1.w
    torch.testing.assert_close(seen["normed"], by_hand, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(edited, model(tokens))


@pytest.mark.parametrize("in_place", [False, True])
def test_an_edited_sink_share_rescales_the_real_keys(sink_model, tokens, in_place):
    model = sink_model
    _, plain = model.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))

    def half(share, hook):
        if in_place:
            share.fill_(0.5)
            return None
        return torch.full_like(share, 0.5)

    seen = {}
    hooks = [("blocks.0.attn.hook_sink", half), ("blocks.0.attn.hook_pattern", lambda x, hook: seen.setdefault("p", x.clone()))]
    out = model.run_with_hooks(tokens, fwd_hooks=hooks)
    old_pattern, old_share = plain["blocks.0.attn.hook_pattern"], plain["blocks.0.attn.hook_sink"]
    torch.testing.assert_close(seen["p"].sum(-1), torch.full_like(old_share, 0.5))
    torch.testing.assert_close(seen["p"], old_pattern * (0.5 / (1 - old_share))[..., None])
    assert not torch.allclose(out, model(tokens))


def test_hooks_that_only_read_change_nothing(sink_model, tokens):
    model = sink_model
    names = [n for n in model.hook_dict if n.endswith(("hook_sink", "hook_scale"))]
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    assert set(names) <= set(cache.keys()) and any(n.endswith("hook_sink") for n in names)
    assert torch.equal(logits, model(tokens))


def test_token_range_is_checked_on_cpu_and_can_be_skipped_by_a_caller_that_checked(tiny_model):
    bad = torch.tensor([[1, 2, 500]])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 128\); got min 1, max 500"):
        tiny_model(bad)
    ok = torch.tensor([[1, 2, 3]])
    assert torch.equal(tiny_model(ok, check_tokens=False), tiny_model(ok))


def test_attaching_a_hook_never_reprs_it(tiny_model):
    """A partial's repr prints every tensor it carries; attaching one must not build it (it was most of
    the faithfulness suite's time on small models)."""
    from functools import partial

    class NoRepr:
        def __repr__(self):
            raise AssertionError("the hook's repr was built")

    seen = []

    def record(x, hook, carried):
        seen.append(hook.name)

    tokens = torch.zeros(1, 4, dtype=torch.long)
    tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", partial(record, carried=NoRepr()))])
    assert seen == ["blocks.0.hook_resid_pre"]
