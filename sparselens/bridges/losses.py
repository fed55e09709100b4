"""The bridge loss of METHOD.md section 5, term by term.

For a batch of tokens, with ``h^d_i``, ``h^s_i`` the two models' residuals at site ``i`` and ``y^d``
the dense logits::

    loss = sum_i NMSE(f_i(h^d_i), h^s_i) + NMSE(g_i(h^s_i), h^d_i)
         + sum_i KL(y^d || sparse run from i on f_i(h^d_i)) + KL(y^d || dense run from i on g_i(h^s_i))
         (+ the sparse model's next-token cross-entropy when it trains with the bridges)

``h^s_i`` is what the sparse model's downstream layers read at the site (the value at its hook
point; the residual stream has no AbsTopK of its own), captured by the same
:func:`~sparselens.bridges.hybrid.capture` in training and in evaluation. The dense model runs
without gradient.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from sparselens.bridges.bridges import Bridges
from sparselens.bridges.hybrid import capture, run_replaced
from sparselens.divergence import kl
from sparselens.errors import InputError, closest_hint


def nmse(pred: Float[Tensor, "batch pos d"], target: Float[Tensor, "batch pos d"]) -> Float[Tensor, ""]:
    """Normalised squared error, a ratio of sums over the whole batch (in fp32).

    ``sum_{b,p,c} (pred - target)^2 / sum_{b,p,c} (target - mu_c)^2`` with ``mu_c`` the mean of
    channel ``c`` of ``target`` over the batch and positions: the squared error over the target's
    total variance (summed over channels), i.e. the fraction of variance unexplained. Not a mean of
    per-token ratios, which explodes for tokens near the mean.
    """
    pred, target = pred.float(), target.float()
    mu = target.mean(dim=tuple(range(target.dim() - 1)), keepdim=True)
    return (pred - target).pow(2).sum() / (target - mu).pow(2).sum().clamp_min(torch.finfo(torch.float32).tiny)


def mean_kl(p_logits: Float[Tensor, "batch pos d_vocab"], q_logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
    """``KL(p || q)`` exact over the full vocabulary, averaged over every token (batch and position)."""
    return kl(p_logits, q_logits).mean()


WEIGHTED_TERMS = ("nmse_enc", "nmse_dec", "kl_sparse", "kl_dense")
SiteWeights = Union[Sequence[float], Mapping[str, Sequence[float]]]


def term_site_weights(site_weights: Optional[SiteWeights], n_sites: int) -> dict[str, list[float]]:
    """Per loss term (:data:`WEIGHTED_TERMS`), one factor per site.

    ``site_weights`` is None (1 everywhere), a list of ``n_sites`` factors for every term of each
    site, or a mapping from some of the terms to such lists (the terms it leaves out keep 1).
    Factors are finite and >= 0, and at least one is positive.
    """
    if site_weights is None:
        lists: dict[str, Any] = {}
    elif isinstance(site_weights, Mapping):
        for term in site_weights:
            if term not in WEIGHTED_TERMS:
                raise InputError(f"site_weights: unknown loss term {term!r}{closest_hint(term, WEIGHTED_TERMS)} "
                                 f"(the terms: {', '.join(WEIGHTED_TERMS)})")
        lists = dict(site_weights)
    else:
        lists = {term: site_weights for term in WEIGHTED_TERMS}
    out = {}
    for term in WEIGHTED_TERMS:
        values = lists.get(term, [1.0] * n_sites)
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence) or len(values) != n_sites:
            raise InputError(f"site_weights ({term}) must be a list of {n_sites} factors, one per bridge site; got {values!r}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf") for x in values):
            raise InputError(f"site_weights ({term}) must be finite numbers >= 0; got {values!r}")
        out[term] = [float(x) for x in values]
    if not any(x > 0 for values in out.values() for x in values):
        raise InputError("site_weights are all 0: the bridges would not train; give at least one positive factor")
    return out


@dataclass
class BridgeLosses:
    """The loss terms of one batch, one entry per site.

    Attributes:
        nmse_enc: [n_sites] ``NMSE(f_i(h^d_i), h^s_i)`` (dense -> sparse).
        nmse_dec: [n_sites] ``NMSE(g_i(h^s_i), h^d_i)`` (sparse -> dense).
        kl_sparse: [n_kl] ``KL(y^d || sparse model run from site i on f_i(h^d_i))`` for each site
            ``i`` of ``kl_sites`` (every site unless the KL terms were sampled).
        kl_dense: [n_kl] ``KL(y^d || dense model run from site i on g_i(h^s_i))``, likewise.
        kl_pair: ``KL(y^d || y^s)``, the two unmodified models' disagreement: the baseline the hybrid
            runs are judged against (reported, never trained on).
        lm: the sparse model's next-token cross-entropy, when it is trained too (else None).
        kl_sites: the site indices of the KL entries.
        n_sites: how many sites the bridges have.
    """

    nmse_enc: Float[Tensor, " n_sites"]
    nmse_dec: Float[Tensor, " n_sites"]
    kl_sparse: Float[Tensor, " n_sites"]
    kl_dense: Float[Tensor, " n_sites"]
    kl_pair: Float[Tensor, ""]
    lm: Optional[Float[Tensor, ""]] = None
    kl_sites: tuple[int, ...] = ()
    n_sites: int = 0

    @property
    def bridge_total(self) -> Float[Tensor, ""]:
        """The bridge terms summed over sites; sampled KL terms scaled by ``n_sites / n_kl`` (an unbiased sum)."""
        return self.weighted_bridge_total(1.0)

    def weighted_bridge_total(self, nmse_weight: float, site_weights: Optional[SiteWeights] = None) -> Float[Tensor, ""]:
        """:attr:`bridge_total` with the NMSE terms multiplied by ``nmse_weight`` (the KL terms by 1) and
        each site's terms by ``site_weights`` (:func:`term_site_weights`; default 1 everywhere)."""
        kl_scale = self.n_sites / len(self.kl_sites)
        w = {term: torch.tensor(values, device=self.nmse_enc.device)
             for term, values in term_site_weights(site_weights, self.n_sites).items()}
        kl = list(self.kl_sites)
        nmse_terms = (w["nmse_enc"] * self.nmse_enc).sum() + (w["nmse_dec"] * self.nmse_dec).sum()
        kl_terms = (w["kl_sparse"][kl] * self.kl_sparse).sum() + (w["kl_dense"][kl] * self.kl_dense).sum()
        return nmse_weight * nmse_terms + kl_scale * kl_terms

    def weighted_total(self, nmse_weight: float = 1.0) -> Float[Tensor, ""]:
        """The loss to minimise: :meth:`weighted_bridge_total` (plus ``lm``)."""
        bridge = self.weighted_bridge_total(nmse_weight)
        return bridge if self.lm is None else bridge + self.lm

    @property
    def total(self) -> Float[Tensor, ""]:
        """The loss to minimise with every term at weight 1: :attr:`bridge_total` (plus ``lm``)."""
        return self.weighted_total(1.0)

    def packed(self) -> Float[Tensor, " terms"]:
        """All terms detached in one vector ``[nmse_enc, nmse_dec, kl_sparse, kl_dense, kl_pair, lm]`` (lm 0 if None)."""
        lm = torch.zeros((), device=self.nmse_enc.device) if self.lm is None else self.lm.float()
        scalars = [self.kl_pair.float().view(1), lm.view(1)]
        return torch.cat([self.nmse_enc, self.nmse_dec, self.kl_sparse, self.kl_dense, *scalars]).detach()


@contextlib.contextmanager
def frozen_parameters(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Within the block the parameters take no gradient; their ``requires_grad`` flags are restored after."""
    params = list(params)
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)


def bridge_losses(
    dense: Any, sparse: Any, bridges: Bridges, tokens: Int[Tensor, "batch pos"], *, lm_loss: bool = False,
    kl_sites: Optional[Sequence[int]] = None,
) -> BridgeLosses:
    """Every term of the bridge loss on ``tokens``: 2 plain and ``2 * n_sites`` hybrid forwards.

    ``kl_sites`` (site indices) limits the KL terms, the hybrid forwards, to those sites; the NMSE
    terms, which need no extra forward, are always computed at every site.

    Gradients reach whatever requires grad: the bridges, and either model's parameters unless they
    are frozen (:class:`~sparselens.bridges.BridgeTrainer` freezes the dense model for each step, and
    the sparse model unless it trains with the bridges). The dense model's plain pass runs without grad.
    """
    sites = bridges.sites
    with torch.no_grad():
        y_dense, h_dense = capture(dense, tokens, sites)
    (y_sparse, lm), h_sparse = capture(sparse, tokens, sites, return_type="both")
    with torch.no_grad():
        kl_pair = mean_kl(y_dense, y_sparse)
    if not lm_loss:
        lm = None
    chosen = tuple(range(len(sites))) if kl_sites is None else tuple(sorted(set(kl_sites)))
    if not chosen or any(not 0 <= i < len(sites) for i in chosen):
        raise InputError(f"kl_sites must be site indices in [0, {len(sites)}), at least one; got {list(chosen)}")
    terms: list[list[Tensor]] = [[], [], [], []]
    for i, site in enumerate(sites):
        h_d, h_s = h_dense[site.hook_name], h_sparse[site.hook_name]
        encoded, decoded = bridges.encode(site, h_d), bridges.decode(site, h_s)
        terms[0].append(nmse(encoded, h_s))
        terms[1].append(nmse(decoded, h_d))
        if i in chosen:
            terms[2].append(mean_kl(y_dense, run_replaced(sparse, tokens, site, encoded)))
            terms[3].append(mean_kl(y_dense, run_replaced(dense, tokens, site, decoded)))
    nmse_enc, nmse_dec, kl_sparse, kl_dense = (torch.stack(t) for t in terms)
    return BridgeLosses(nmse_enc, nmse_dec, kl_sparse, kl_dense, kl_pair, lm, chosen, len(sites))


__all__ = ["BridgeLosses", "WEIGHTED_TERMS", "bridge_losses", "frozen_parameters", "mean_kl", "nmse", "term_site_weights"]
