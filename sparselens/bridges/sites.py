"""The 2L + 1 bridge sites of a model, and the checks that two models can be bridged.

A bridge site is a point of the residual stream, named by its TransformerLens hook (METHOD.md
section 5): the embedding output (``blocks.0.hook_resid_pre``), then before each attention block
(``blocks.{l}.hook_resid_pre``) and before each MLP (``blocks.{l}.hook_resid_mid``), and last the
final residual before the final norm (``blocks.{L-1}.hook_resid_post``). Site ``i`` of one model
is bridged to site ``i`` of the other, so both need the same number of layers.

Only ``cfg.n_layers``, ``cfg.d_model``, ``cfg.d_vocab`` and ``hook_dict`` are read from a model (and
its modules, to refuse one with dropout in training mode), so any TransformerLens-style model (a :class:`~sparselens.HookedSparseTransformer`, a
``TransformerBridge``) can be a side of a pair.

Replacing the residual at a ``hook_resid_mid`` site also takes that block's ``hook_resid_pre`` and
``hook_attn_out`` (:func:`skip_hooks`; why: :func:`~sparselens.bridges.hybrid.replace_hooks`).

Examples:
    >>> [s.hook_name for s in bridge_sites(1)]
    ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_mid', 'blocks.0.hook_resid_post']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

from jaxtyping import Int
from torch import Tensor, nn

from sparselens.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class BridgeSite:
    """One residual-stream site.

    Attributes:
        index: position in forward order, ``0 .. 2 * n_layers``.
        hook_name: the TransformerLens hook whose value is the residual there [batch pos d_model].
        label: a short name for tables and plots, e.g. ``L0.resid_pre`` or ``final``.
    """

    index: int
    hook_name: str
    label: str


SiteLike = Union[int, str, BridgeSite]


def bridge_sites(n_layers: int) -> tuple[BridgeSite, ...]:
    """The ``2 * n_layers + 1`` sites of a model with ``n_layers`` blocks, in forward order."""
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise InputError(f"bridges need a model with at least one layer, got n_layers={n_layers!r}")
    sites: list[BridgeSite] = []
    for layer in range(n_layers):
        sites.append(BridgeSite(2 * layer, f"blocks.{layer}.hook_resid_pre", f"L{layer}.resid_pre"))
        sites.append(BridgeSite(2 * layer + 1, f"blocks.{layer}.hook_resid_mid", f"L{layer}.resid_mid"))
    sites.append(BridgeSite(2 * n_layers, f"blocks.{n_layers - 1}.hook_resid_post", "final"))
    return tuple(sites)


def resolve_site(sites: Sequence[BridgeSite], site: SiteLike) -> BridgeSite:
    """The site given by its index, hook name or label; an unknown one raises with the closest name."""
    if isinstance(site, BridgeSite):
        if site not in sites:
            raise UnknownNameError("bridge site", site.hook_name, [s.hook_name for s in sites])
        return site
    if isinstance(site, int) and not isinstance(site, bool):
        if not 0 <= site < len(sites):
            raise InputError(f"bridge site index {site} is out of range; these bridges have sites 0..{len(sites) - 1}")
        return sites[site]
    for candidate in sites:
        if site in (candidate.hook_name, candidate.label):
            return candidate
    names = [s.hook_name for s in sites] + [s.label for s in sites]
    raise UnknownNameError("bridge site", str(site), names, note="a site is a residual hook name, its label or its index")


def skip_hooks(site: BridgeSite) -> tuple[str, ...]:
    """For a ``blocks.{l}.hook_resid_mid`` site, ``(blocks.{l}.hook_resid_pre, blocks.{l}.hook_attn_out)``,
    the two terms TransformerLens sums into it; ``()`` for any other site."""
    block, _, hook = site.hook_name.rpartition(".")
    return (f"{block}.hook_resid_pre", f"{block}.hook_attn_out") if hook == "hook_resid_mid" else ()


def model_sites(model: Any, role: str = "model") -> tuple[BridgeSite, ...]:
    """The bridge sites of ``model``, checked to be hook points it has; ``role`` names it in errors.

    Raises :class:`InputError` when a hook a hybrid run needs is missing, or when the model has a
    dropout layer in training mode (its runs would be random: call ``model.eval()``).
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "hook_dict"):
        raise InputError(
            f"the {role} model ({type(model).__name__}) is not a TransformerLens-style model: it needs a "
            "cfg (n_layers, d_model, d_vocab) and hook points (hook_dict)"
        )
    sites = bridge_sites(cfg.n_layers)
    needed = [name for s in sites for name in (s.hook_name, *skip_hooks(s))]
    missing = [name for name in dict.fromkeys(needed) if name not in model.hook_dict]
    if missing:
        raise InputError(
            f"the {role} model ({type(model).__name__}) has no hook point {missing[0]!r} (missing: {missing}); bridges "
            "replace the residual stream at TransformerLens's blocks.{l}.hook_resid_pre/mid/post (a mid site through "
            "hook_attn_out too). Give the model these hook names: a TransformerBridge of a sequential block has them"
        )
    active = [name for name, module in model.named_modules() if isinstance(module, nn.modules.dropout._DropoutNd)
              and module.training and module.p > 0]
    if active:
        raise InputError(
            f"the {role} model has dropout in training mode ({active[0]!r}, p={model.get_submodule(active[0]).p}; "
            f"{len(active)} such layers), so each of its runs is random and hybrid runs cannot be compared with its "
            "own run. Call model.eval() first (a Hugging Face model built from a config starts in training mode)"
        )
    return sites


def check_pair(dense: Any, sparse: Any) -> tuple[BridgeSite, ...]:
    """The sites two models share; raise :class:`InputError` unless they can be bridged.

    They need the same number of layers (site ``i`` maps to site ``i``), the same vocabulary (the
    hybrid runs' KL compares their next-token distributions) and, when both name one, the same
    tokenizer.
    """
    if dense is sparse:  # a model bridged to itself
        return model_sites(dense, "dense")
    d_cfg, s_cfg = dense.cfg, sparse.cfg
    if d_cfg.n_layers != s_cfg.n_layers:
        raise InputError(
            f"the dense model has {d_cfg.n_layers} layers and the sparse model {s_cfg.n_layers}; bridges map "
            "site i of one to site i of the other, so both models need the same number of layers"
        )
    if d_cfg.d_vocab != s_cfg.d_vocab:
        raise InputError(
            f"the dense model's vocabulary has {d_cfg.d_vocab} tokens and the sparse model's {s_cfg.d_vocab}; "
            "bridged models must share a tokenizer (the loss compares their next-token distributions)"
        )
    d_tok, s_tok = getattr(d_cfg, "tokenizer_name", None), getattr(s_cfg, "tokenizer_name", None)
    if d_tok and s_tok and d_tok != s_tok:
        raise InputError(f"the dense model uses tokenizer {d_tok!r} and the sparse model {s_tok!r}; bridged models must share one")
    sites = model_sites(dense, "dense")
    model_sites(sparse, "sparse")
    return sites


__all__ = ["BridgeSite", "SiteLike", "bridge_sites", "check_pair", "model_sites", "resolve_site", "skip_hooks"]


def check_tokens(tokens: Any, what: str) -> Int[Tensor, "n_seq pos"]:
    """``tokens`` if it is a non-empty integer tensor ``[n_seq, pos]``, else an InputError naming ``what``."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.numel() == 0:
        shape = f" of shape {tuple(tokens.shape)}" if isinstance(tokens, Tensor) else ""
        raise InputError(f"{what} must be an integer token tensor [n_seq, pos], got {type(tokens).__name__}{shape}")
    return tokens
