"""Hybrid runs as hooks on each model's own forward pass (DESIGN.md principle 1).

"Run the sparse model from site i on ``f_i(h^d_i)``" is the sparse model's ordinary forward with one
hook at site ``i`` that returns ``f_i(h^d_i)`` in place of the residual there; everything
downstream (norms, every AbsTopK, the unembedding) is the model's own code. The part of the forward
before the site still runs, and its output is discarded. There is no hand-written
``forward_from_site``: one of those skipped the activation top-k downstream of the site, and its
logits were off by up to 0.37.

Every function here uses only ``run_with_hooks`` and TransformerLens hook names, so a
``TransformerBridge`` works wherever a :class:`~sparselens.HookedSparseTransformer` does (a
``hook_resid_mid`` site takes two more hooks on both: :func:`replace_hooks` says why).

Examples:
    >>> logits_d, h_d = capture(dense, tokens, bridges.sites)                # h_d: hook name -> [batch pos d_dense]
    >>> y = sparse_from_site(sparse, bridges, "blocks.1.hook_resid_pre", tokens, h_d["blocks.1.hook_resid_pre"])
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

from jaxtyping import Float, Int
from torch import Tensor

from sparselens.bridges.bridges import Bridges
from sparselens.bridges.sites import BridgeSite, SiteLike, skip_hooks
from sparselens.interventions.ablation import FwdHooks


def _store(activation: Tensor, hook: Any, key: str, store: dict[str, Tensor]) -> None:
    store[key] = activation  # not detached: with grad enabled, a loss on it reaches the model


def _replace(activation: Tensor, hook: Any, value: Tensor) -> Tensor:
    return value.to(activation.dtype)


def _add(activation: Tensor, hook: Any, value: Tensor) -> Tensor:
    return activation + value.to(activation.dtype)


def capture(
    model: Any, tokens: Int[Tensor, "batch pos"], sites: Sequence[BridgeSite], **forward_kwargs: Any
) -> tuple[Any, dict[str, Float[Tensor, "batch pos d_model"]]]:
    """One forward of ``model``; returns its output and the residual at every site (by hook name).

    The activations keep their autograd history when grad is enabled (unlike ``run_with_cache``,
    which detaches), so training and evaluation read the same values the same way.
    ``forward_kwargs`` go to the model (e.g. ``return_type="both"``).
    """
    store: dict[str, Tensor] = {}
    hooks: FwdHooks = [(s.hook_name, partial(_store, key=s.hook_name, store=store)) for s in sites]
    out = model.run_with_hooks(tokens, fwd_hooks=hooks, **forward_kwargs)
    return out, store


def _replace_skip(activation: Tensor, hook: Any, value: Tensor, store: dict[str, Tensor]) -> Tensor:
    return value.to(activation.dtype) - store["resid_pre"].to(activation.dtype)


def replace_hooks(site: BridgeSite, value: Float[Tensor, "batch pos d_model"]) -> FwdHooks:
    """Hooks that put ``value`` on the residual stream at ``site`` (the activation's shape; cast to its dtype).

    At ``hook_resid_pre`` and ``hook_resid_post`` one hook returns ``value``. At
    ``blocks.{l}.hook_resid_mid`` that is not enough on every model: a ``TransformerBridge``'s
    ``hook_resid_mid`` is an alias of ``blocks.{l}.ln2.hook_in``, the input of the MLP's norm only,
    while the Hugging Face block adds the MLP's output to its own ``resid_pre + attn_out``. So the
    hooks also replace ``hook_attn_out`` by ``value - resid_pre`` (``resid_pre`` read in the same
    run), which puts ``resid_pre + (value - resid_pre)`` on the skip connection: ``value`` to within
    one rounding (exactly, when ``value`` is the model's own residual there). On a model whose
    ``hook_resid_mid`` is the residual itself (a :class:`~sparselens.HookedSparseTransformer`), the
    sum is replaced after it is formed and the result is ``value`` bit for bit.
    """
    hooks: FwdHooks = [(site.hook_name, partial(_replace, value=value))]
    skip = skip_hooks(site)
    if skip:
        store: dict[str, Tensor] = {}
        resid_pre, attn_out = skip
        hooks = [(resid_pre, partial(_store, key="resid_pre", store=store)),
                 (attn_out, partial(_replace_skip, value=value, store=store)), *hooks]
    return hooks


def add_hooks(site: BridgeSite, value: Float[Tensor, "batch pos d_model"]) -> FwdHooks:
    """Hooks that add ``value`` to the residual stream at ``site`` (a steering edit; cast to its dtype).

    At ``blocks.{l}.hook_resid_mid`` the value is added to ``blocks.{l}.hook_attn_out``, the term the
    block sums into that residual, so it reaches the MLP and the skip connection on every model (a
    ``TransformerBridge``'s ``hook_resid_mid`` feeds the MLP's norm only: :func:`replace_hooks`).
    The residual there is then ``resid_pre + (attn_out + value)``: ``resid_mid + value`` within one
    rounding, and exactly the model's own when ``value`` is zero.
    """
    skip = skip_hooks(site)
    return [(skip[1] if skip else site.hook_name, partial(_add, value=value))]


def run_replaced(
    model: Any, tokens: Int[Tensor, "batch pos"], site: BridgeSite, value: Float[Tensor, "batch pos d_model"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """``model``'s logits with the residual at ``site`` replaced by ``value``."""
    return model.run_with_hooks(tokens, fwd_hooks=replace_hooks(site, value))


def sparse_from_site(
    sparse: Any, bridges: Bridges, site: SiteLike, tokens: Int[Tensor, "batch pos"], dense_resid: Float[Tensor, "batch pos d_dense"],
) -> Float[Tensor, "batch pos d_vocab"]:
    """The sparse model's logits run from ``site`` on ``f_i(h^d_i)``, the dense residual there encoded."""
    resolved = bridges.site(site)
    return run_replaced(sparse, tokens, resolved, bridges.encode(resolved, dense_resid))


def dense_from_site(
    dense: Any, bridges: Bridges, site: SiteLike, tokens: Int[Tensor, "batch pos"], sparse_resid: Float[Tensor, "batch pos d_sparse"],
) -> Float[Tensor, "batch pos d_vocab"]:
    """The dense model's logits run from ``site`` on ``g_i(h^s_i)``, the sparse residual there decoded."""
    resolved = bridges.site(site)
    return run_replaced(dense, tokens, resolved, bridges.decode(resolved, sparse_resid))


__all__ = ["add_hooks", "capture", "dense_from_site", "replace_hooks", "run_replaced", "sparse_from_site"]
