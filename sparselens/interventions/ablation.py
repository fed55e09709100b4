"""Ablations as hook functions on node sites (DESIGN.md principle 1).

Every dropped node's activation is replaced, at its node hook point, by ``mask * x + (1 - mask) * r``
where ``r`` is zero, the node's mean over a reference distribution, or the activation from another
batch (resample). The hooks go to ``model.run_with_hooks(tokens, fwd_hooks=...)`` or
``model.hooks(...)``; nothing else changes the forward pass.

Example:
    >>> mask = NodeMask.full(model.node_registry).drop(["L0.neuron[3]"])
    >>> logits = model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, mask, "zero"))
"""

from __future__ import annotations

from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.hook_points import HookPoint

from sparselens import kernels
from sparselens.errors import closest_hint
from sparselens.nodes import NodeMask, NodeSite

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

FwdHooks = list[tuple[str, Callable]]


class Ablation(str, Enum):
    """What replaces a dropped node."""

    ZERO = "zero"
    MEAN = "mean"
    RESAMPLE = "resample"

    @classmethod
    def parse(cls, value: Union[str, "Ablation"]) -> "Ablation":
        try:
            return cls(value)
        except ValueError:
            names = [a.value for a in cls]
            raise ValueError(f"unknown ablation {value!r}; use one of {names}" + closest_hint(str(value), names)) from None


def _mask_hook(
    activation: Float[Tensor, "batch pos ..."],
    hook: HookPoint,
    keep: Tensor,
    replacement: Optional[Tensor],
) -> Float[Tensor, "batch pos ..."]:
    if replacement is not None and replacement.dim() == activation.dim() and replacement.shape != activation.shape:
        raise ValueError(
            f"resample ablation at {hook.name}: the resample activations have shape "
            f"{tuple(replacement.shape)} but this run's are {tuple(activation.shape)}; cache the "
            "resample batch with the same batch size and sequence length"
        )
    return kernels.masked_ablate(activation, keep, replacement)


def ablation_hooks(
    model: "HookedSparseTransformer",
    mask: Union[NodeMask, Mapping[str, Tensor]],
    ablation: Union[str, Ablation],
    means: Optional[Mapping[str, Tensor]] = None,
    resample_cache: Optional[Mapping[str, Tensor]] = None,
) -> FwdHooks:
    """``fwd_hooks`` that run ``model`` with the nodes ``mask`` drops ablated.

    Every node site gets a hook (kept nodes pass through exactly: ``1 * x + 0 * r == x``).

    Args:
        model: the model the mask was built for.
        mask: keep/drop per node: a :class:`NodeMask`, or per-site mask values [n_nodes] keyed by
            site name (floats in [0, 1], possibly with gradient, as mask learning uses).
        ablation: ``"zero"``, ``"mean"`` or ``"resample"``.
        means: for mean ablation, per-site means keyed by hook name (or site name), each
            [*channel_shape] or [n_nodes]; see :func:`sparselens.interventions.compute_means`.
        resample_cache: for resample ablation, activations of another batch of the same shape,
            keyed by hook name (an ``ActivationCache`` from ``model.run_with_cache`` works).

    Returns:
        A list of ``(hook_name, hook_fn)`` for ``run_with_hooks``.
    """
    ablation = Ablation.parse(ablation)
    if isinstance(mask, NodeMask) and mask.registry.sites != model.node_registry.sites:
        raise ValueError("the NodeMask was built for a different model (its node sites differ)")
    if ablation is Ablation.MEAN and means is None:
        raise ValueError("mean ablation needs means=...; compute them with sparselens.interventions.compute_means")
    if ablation is Ablation.RESAMPLE and resample_cache is None:
        raise ValueError("resample ablation needs resample_cache=... (e.g. the cache of model.run_with_cache on another batch)")
    device = model.W_E.device
    hooks: FwdHooks = []
    for site in model.node_sites:
        keep = _lookup(mask, site, "mask").to(device).reshape(site.channel_shape)
        replacement = None
        if ablation is Ablation.MEAN:
            replacement = _site_mean(means, site).to(device)
        elif ablation is Ablation.RESAMPLE:
            replacement = _lookup(resample_cache, site, "resample_cache")
        hooks.append((site.hook_name, partial(_mask_hook, keep=keep, replacement=replacement)))
    return hooks


def _lookup(table: Mapping[str, Tensor], site: NodeSite, what: str) -> Tensor:
    for key in (site.hook_name, site.name):
        try:
            return table[key]
        except KeyError:
            continue
    raise KeyError(f"{what} has no entry for node site {site.name} (hook {site.hook_name!r})")


def _site_mean(means: Mapping[str, Tensor], site: NodeSite) -> Tensor:
    mean = torch.as_tensor(_lookup(means, site, "means"))
    if mean.numel() != site.n_nodes:
        raise ValueError(f"means for {site.name} have {mean.numel()} entries, expected {site.n_nodes} {site.channel_shape}")
    if not bool(torch.isfinite(mean).all()):
        raise ValueError(f"means for {site.name} contain NaN or inf; recompute them")
    return mean.reshape(site.channel_shape)


def freeze_norm_hooks(scales: Mapping[str, Tensor], names: Optional[list[str]] = None) -> FwdHooks:
    """Hooks that patch recorded RMSNorm scales into a run (frozen norms, METHOD.md section 4).

    Args:
        scales: activations keyed by hook name, containing the ``*.hook_scale`` entries of the
            reference run (e.g. the cache of the unpruned model on the same batch).
        names: which scale hooks to patch; default every ``hook_scale`` in ``scales``.
    """
    names = names if names is not None else [n for n in scales if n.endswith("hook_scale")]
    if not names:
        raise ValueError("no '*.hook_scale' entries to freeze; cache the reference run with names_filter including them")

    def patch(activation: Tensor, hook: HookPoint, recorded: Tensor) -> Tensor:
        if recorded.shape != activation.shape:
            raise ValueError(
                f"frozen norm scale for {hook.name} has shape {tuple(recorded.shape)} but this run's is "
                f"{tuple(activation.shape)}; record the scales on the same batch"
            )
        return recorded

    return [(name, partial(patch, recorded=scales[name])) for name in names]
