"""Ablations as hook functions on node sites (DESIGN.md principle 1).

Every dropped node's activation is replaced, at its node hook point, by ``mask * x + (1 - mask) * r``
where ``r`` is zero, the node's mean over a reference distribution, or the activation from another
batch (resample). The hooks go to ``model.run_with_hooks(tokens, fwd_hooks=...)`` or
``model.hooks(...)``; nothing else changes the forward pass.

Examples:
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
    from sparselens.interventions.reference import ReferenceRun
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

# what TransformerLens's run_with_hooks / hooks take as fwd_hooks: (hook name or name filter, hook fn);
# spelled exactly so, since list is invariant and list[tuple[str, Callable]] would not be accepted
FwdHooks = list[tuple[Union[str, Callable], Callable]]


class Ablation(str, Enum):
    """What replaces a dropped node, and what that replacement needs (the extension point).

    ``replacement(site, means, resample_cache)`` is the value ``r`` a dropped node of ``site`` takes:
    zero (None), the node's mean over the pretraining distribution, or the activation of another
    prompt (resample: :meth:`sparselens.interventions.ReferenceRun.resampled` aligns one with the
    other answer at the read position). ``needs`` says which input that takes, so callers (pruning,
    the CLIs, the faithfulness suite) ask for exactly it. Interpolating between the node's own
    value and ``r`` (stochastic or adversarial ablation) is orthogonal: ``ablation_hooks``'s
    ``interpolation``.
    """

    ZERO = "zero"
    MEAN = "mean"
    RESAMPLE = "resample"
    #: faithful pruning (METHOD.md section 6): mean ablation with a random interpolation ``r ~ U(0, 1)``
    #: per node and prompt while the mask is learned
    STOCHASTIC = "stochastic"
    #: faithful pruning: mean ablation with an adversary's ``r`` in [0, 1] per node while the mask is learned
    ADVERSARIAL = "adversarial"

    @classmethod
    def parse(cls, value: Union[str, "Ablation"]) -> "Ablation":
        try:
            return cls(value)
        except ValueError:
            names = cls.choices()
            raise ValueError(f"unknown ablation {value!r}; use one of {names}" + closest_hint(str(value), names)) from None

    @classmethod
    def choices(cls) -> list[str]:
        """Every ablation's name (for command-line choices)."""
        return [a.value for a in cls]

    @property
    def base(self) -> "Ablation":
        """The plain ablation whose replacement this one uses (a circuit found with it runs with that)."""
        return Ablation.MEAN if self in (Ablation.STOCHASTIC, Ablation.ADVERSARIAL) else self

    @property
    def interpolation(self) -> Optional[str]:
        """How mask learning interpolates a dropped node with its replacement: None, ``"random"`` or ``"adversarial"``."""
        return {Ablation.STOCHASTIC: "random", Ablation.ADVERSARIAL: "adversarial"}.get(self)

    @property
    def needs(self) -> Optional[str]:
        """``"means"`` (pretraining means), ``"resample"`` (another prompt's activations) or None."""
        return {Ablation.MEAN: "means", Ablation.RESAMPLE: "resample"}.get(self.base)

    def replacement(
        self, site: NodeSite, means: Optional[Mapping[str, Tensor]], resample_cache: Optional[Mapping[str, Tensor]]
    ) -> Optional[Tensor]:
        """``r`` for the dropped nodes of ``site``: None (zero), ``[*channel]`` (mean) or shaped like the activation."""
        if self.base is Ablation.MEAN:
            return _site_mean(means, site)
        if self.base is Ablation.RESAMPLE:
            return _lookup(resample_cache, site, "resample_cache")
        return None


def _mask_hook(
    activation: Float[Tensor, "batch pos ..."],
    hook: HookPoint,
    keep: Tensor,
    replacement: Optional[Tensor],
    interpolation: Optional[Tensor],
) -> Float[Tensor, "batch pos ..."]:
    if replacement is not None and replacement.dim() == activation.dim() and replacement.shape != activation.shape:
        raise ValueError(
            f"resample ablation at {hook.name}: the resample activations have shape "
            f"{tuple(replacement.shape)} but this run's are {tuple(activation.shape)}; build them from the "
            "same batch (ReferenceRun.of(model, batch).resampled())"
        )
    if interpolation is None:
        return kernels.masked_ablate(activation, keep, replacement)
    # a dropped node keeps the share r of its own value: keep + (1 - keep) * r, per node or per sample
    r = interpolation.to(activation.dtype)
    if r.dim() > keep.dim():  # [batch, *channel]: one draw per prompt, the same at every position
        r = r.reshape(r.shape[0], *([1] * (activation.dim() - keep.dim() - 1)), *keep.shape)
    keep = keep.to(activation.dtype)
    effective = keep + (1 - keep) * r
    rep = torch.zeros((), dtype=activation.dtype, device=activation.device) if replacement is None else replacement
    return effective * activation + (1 - effective) * rep


def ablation_hooks(
    model: "HookedSparseTransformer",
    mask: Union[NodeMask, Mapping[str, Tensor]],
    ablation: Union[str, Ablation],
    means: Optional[Mapping[str, Tensor]] = None,
    resample_cache: Optional[Mapping[str, Tensor]] = None,
    interpolation: Optional[Mapping[str, Tensor]] = None,
) -> FwdHooks:
    """``fwd_hooks`` that run ``model`` with the nodes ``mask`` drops ablated.

    Every node site gets a hook; a node with keep value ``m`` becomes ``m * x + (1 - m) * r`` with
    ``r`` from :meth:`Ablation.replacement` (kept nodes pass through exactly: ``1 * x + 0 * r == x``).

    Args:
        model: the model the mask was built for.
        mask: keep/drop per node: a :class:`NodeMask`, or per-site mask values [n_nodes] keyed by
            site name (floats in [0, 1], possibly with gradient, as mask learning uses).
        ablation: an :class:`Ablation` or its name (``Ablation.choices()``).
        means: for mean ablation, per-site means keyed by hook name (or site name), each
            [*channel_shape] or [n_nodes]; see :func:`sparselens.interventions.pretraining_means`.
        resample_cache: for resample ablation, activations to take the replacement from, shaped like
            this run's and keyed by hook name (``ReferenceRun.resampled()``, or any cache of another
            batch of the same shape).
        interpolation: optional ``r`` per site name, ``[n_nodes]`` (one value per node) or
            ``[batch, n_nodes]`` (one per prompt): a dropped node becomes ``r * x + (1 - r) * A(x)``
            (stochastic and adversarial ablation); ``r = 0`` is the plain ablation.

    Returns:
        A list of ``(hook_name, hook_fn)`` for ``run_with_hooks``.
    """
    ablation = Ablation.parse(ablation)
    if isinstance(mask, NodeMask) and mask.registry.sites != model.node_registry.sites:
        raise ValueError("the NodeMask was built for a different model (its node sites differ)")
    if ablation.needs == "means" and means is None:
        raise ValueError("mean ablation needs means=...; get them with sparselens.interventions.pretraining_means(model)")
    if ablation.needs == "resample" and resample_cache is None:
        raise ValueError("resample ablation needs resample_cache=...: ReferenceRun.of(model, batch).resampled()")
    device = model.W_E.device
    hooks: FwdHooks = []
    for site in model.node_sites:
        keep = _lookup(mask, site, "mask").to(device).reshape(site.channel_shape)
        replacement = ablation.replacement(site, means, resample_cache)
        r = None
        if interpolation is not None:
            r = _lookup(interpolation, site, "interpolation").to(device)
            if r.shape[-1:] != (site.n_nodes,) or r.dim() > 2:
                raise ValueError(f"interpolation for {site.name} must be [n_nodes] or [batch, n_nodes] with "
                                 f"n_nodes={site.n_nodes}, got {tuple(r.shape)}")
            r = r.reshape(*r.shape[:-1], *site.channel_shape)
        hooks.append((site.hook_name, partial(_mask_hook, keep=keep, replacement=None if replacement is None
                                              else replacement.to(device), interpolation=r)))
    return hooks


def circuit_hooks(
    model: "HookedSparseTransformer",
    mask: Union[NodeMask, dict[str, Tensor]],
    ablation: Union[str, Ablation],
    reference: Optional["ReferenceRun"] = None,
    means: Optional[dict[str, Tensor]] = None,
    freeze_norms: bool = False,
    interpolation: Optional[dict[str, Tensor]] = None,
) -> FwdHooks:
    """``fwd_hooks`` that run ``model`` as the circuit ``mask`` on the batch of ``reference``.

    ``reference`` (:class:`~sparselens.interventions.ReferenceRun` of the same batch, built once and
    reused for every circuit evaluated on it) is needed for resample ablation (its resample source)
    and for frozen norms (its RMSNorm scales); ``means`` for mean ablation; ``interpolation`` as in
    :func:`~sparselens.interventions.ablation_hooks`.
    """
    ablation = Ablation.parse(ablation)
    if (ablation.needs == "resample" or freeze_norms) and reference is None:
        raise ValueError("resample ablation and frozen norms need reference=ReferenceRun.of(model, batch) of the "
                         "batch the circuit will run on")
    resample = None
    if ablation.needs == "resample":
        assert reference is not None  # checked above
        resample = reference.resampled()
    hooks = ablation_hooks(model, mask, ablation, means=means, resample_cache=resample, interpolation=interpolation)
    if freeze_norms:
        assert reference is not None  # checked above
        hooks += freeze_norm_hooks(reference.norm_scales())
    return hooks


def _lookup(table: Union[NodeMask, Mapping[str, Tensor], None], site: NodeSite, what: str) -> Tensor:
    if table is None:
        raise ValueError(f"{what} is needed for node site {site.name}")
    for key in (site.hook_name, site.name):
        try:
            return table[key]
        except KeyError:
            continue
    raise KeyError(f"{what} has no entry for node site {site.name} (hook {site.hook_name!r})")


def _site_mean(means: Optional[Mapping[str, Tensor]], site: NodeSite) -> Tensor:
    if means is None:
        raise ValueError("mean ablation needs means=...; get them with sparselens.interventions.pretraining_means(model)")
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
