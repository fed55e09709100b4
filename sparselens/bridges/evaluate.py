"""Held-out evaluation of bridges, per site, next to two baselines (issue 13, item 4).

Per site ``i``, over every token of the evaluation set:

* FVU both ways: ``sum (f_i(h^d_i) - h^s_i)^2 / sum (h^s_i - mu^s_i)^2`` (dense -> sparse) and the
  same for ``g_i(h^s_i)`` against ``h^d_i``, with ``mu_i`` the per-channel mean over the whole set:
  :func:`~sparselens.bridges.losses.nmse` taken over the set instead of one batch.
* KL of both hybrid runs, exact over the vocabulary and averaged per token:
  ``KL(y^d || sparse run from i on f_i(h^d_i))`` and ``KL(y^d || dense run from i on g_i(h^s_i))``.
* Baselines: ``KL(y^d || y^s)`` (how far apart the two models are anyway) and the same two runs
  with the site mean-ablated instead of bridged: the residual at ``i`` replaced by its mean over
  the evaluation set (``mu^s_i`` in the sparse model, ``mu^d_i`` in the dense one).

Examples:
    >>> result = evaluate_bridges(dense, sparse, bridges, val_tokens)
    >>> print(result.table())
    >>> result.plot("bridges.png")
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.bridges.bridges import Bridges
from sparselens.bridges.hybrid import capture, run_replaced
from sparselens.bridges.sites import BridgeSite, SiteLike, check_tokens, resolve_site
from sparselens.divergence import kl
from sparselens.errors import InputError
from sparselens.files import save_figure_atomic
from sparselens.train.batches import TokenSplits


@dataclass(frozen=True)
class SiteEvaluation:
    """One site's numbers (FVU: fraction of variance unexplained; KL in nats per token).

    Attributes:
        site: the site.
        fvu_dense_to_sparse: of ``f_i(h^d_i)`` as a prediction of ``h^s_i``.
        fvu_sparse_to_dense: of ``g_i(h^s_i)`` as a prediction of ``h^d_i``.
        kl_sparse_bridged: ``KL(y^d || sparse model run from i on f_i(h^d_i))``.
        kl_dense_bridged: ``KL(y^d || dense model run from i on g_i(h^s_i))``.
        kl_sparse_mean_ablated: ``KL(y^d || sparse model run from i on its mean residual there)``.
        kl_dense_mean_ablated: ``KL(y^d || dense model run from i on its mean residual there)``.
    """

    site: BridgeSite
    fvu_dense_to_sparse: float
    fvu_sparse_to_dense: float
    kl_sparse_bridged: float
    kl_dense_bridged: float
    kl_sparse_mean_ablated: float
    kl_dense_mean_ablated: float


@dataclass
class BridgeEvaluation:
    """:func:`evaluate_bridges`'s result: one :class:`SiteEvaluation` per site and the pair's own KL.

    Attributes:
        sites: per site, in forward order.
        kl_dense_sparse: ``KL(y^d || y^s)``, the two unmodified models' disagreement.
        n_tokens: tokens evaluated (every position of every sequence).
    """

    sites: list[SiteEvaluation]
    kl_dense_sparse: float
    n_tokens: int

    def __getitem__(self, site: SiteLike) -> SiteEvaluation:
        return self.sites[resolve_site([s.site for s in self.sites], site).index]

    def beats_baselines(self) -> list[bool]:
        """Per site: both hybrid KLs are below ``KL(y^d || y^s)`` and below their mean-ablated run."""
        return [
            max(s.kl_sparse_bridged, s.kl_dense_bridged) < self.kl_dense_sparse
            and s.kl_sparse_bridged < s.kl_sparse_mean_ablated
            and s.kl_dense_bridged < s.kl_dense_mean_ablated
            for s in self.sites
        ]

    def table(self) -> str:
        """A markdown table of every site's numbers, the baselines beside them."""
        lines = [
            f"KL(dense || sparse) = {self.kl_dense_sparse:.4f} nats/token over {self.n_tokens:,} tokens",
            "",
            "| site | hook | FVU dense->sparse | FVU sparse->dense | KL sparse from site: bridged | mean-ablated "
            "| KL dense from site: bridged | mean-ablated | beats both baselines |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s, beats in zip(self.sites, self.beats_baselines()):
            lines.append(
                f"| {s.site.label} | `{s.site.hook_name}` | {s.fvu_dense_to_sparse:.4f} | {s.fvu_sparse_to_dense:.4f} "
                f"| {s.kl_sparse_bridged:.4f} | {s.kl_sparse_mean_ablated:.4f} | {s.kl_dense_bridged:.4f} "
                f"| {s.kl_dense_mean_ablated:.4f} | {'yes' if beats else 'no'} |"
            )
        return "\n".join(lines)

    def plot(self, path: Optional[Union[str, Path]] = None) -> Any:
        """A matplotlib figure: FVU per site (left), hybrid and baseline KLs per site (right); saved to ``path`` (.png, .svg, .html...)."""
        from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

        labels = [s.site.label for s in self.sites]
        x = list(range(len(labels)))
        fig = Figure(figsize=(12, 4.5))
        fvu_ax, kl_ax = fig.subplots(1, 2)
        fvu_ax.plot(x, [s.fvu_dense_to_sparse for s in self.sites], "o-", label="dense -> sparse: f_i(h^d) vs h^s")
        fvu_ax.plot(x, [s.fvu_sparse_to_dense for s in self.sites], "s-", label="sparse -> dense: g_i(h^s) vs h^d")
        fvu_ax.set_title("fraction of variance unexplained (held out)")
        kl_ax.plot(x, [s.kl_sparse_bridged for s in self.sites], "o-", color="C0", label="sparse from site, bridged")
        kl_ax.plot(x, [s.kl_sparse_mean_ablated for s in self.sites], "o:", color="C0", alpha=0.6, label="sparse from site, mean-ablated")
        kl_ax.plot(x, [s.kl_dense_bridged for s in self.sites], "s-", color="C1", label="dense from site, bridged")
        kl_ax.plot(x, [s.kl_dense_mean_ablated for s in self.sites], "s:", color="C1", alpha=0.6, label="dense from site, mean-ablated")
        kl_ax.axhline(self.kl_dense_sparse, color="gray", linestyle="--", label="KL(dense || sparse)")
        kl_ax.set_title("KL(dense || run), nats per token")
        for ax in (fvu_ax, kl_ax):
            values = [v for line in ax.get_lines() for v in line.get_ydata() if math.isfinite(v)]
            if values and min(values) > 0 and max(values) / min(values) > 10:  # spans a decade: log scale
                ax.set_yscale("log")
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=30, ha="right")
            ax.set_xlabel("site")
            ax.legend(fontsize="small")
        fig.suptitle(f"bridges, per site ({self.n_tokens:,} held-out tokens)")
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.87, wspace=0.2)
        if path is not None:
            save_figure_atomic(fig, path)
        return fig

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the pair's KL, the token count and one mapping per site."""
        rows = []
        for s in self.sites:
            row = asdict(s)
            row["site"] = s.site.hook_name
            row["label"] = s.site.label
            rows.append(row)
        return {"kl_dense_sparse": self.kl_dense_sparse, "n_tokens": self.n_tokens, "sites": rows}


def _as_tokens(tokens: Union[Tensor, TokenSplits]) -> Int[Tensor, "n_seq pos"]:
    if isinstance(tokens, TokenSplits):
        return tokens.val
    return check_tokens(tokens, "evaluate_bridges' held-out tokens (or a TokenSplits, whose val split is used)")


@torch.no_grad()
def evaluate_bridges(
    dense: Any, sparse: Any, bridges: Bridges, tokens: Union[Tensor, TokenSplits], *, batch_size: int = 16, progress: bool = True
) -> BridgeEvaluation:
    """Per-site FVU and hybrid-run KL of ``bridges`` on held-out ``tokens``, with the baselines.

    Args:
        dense, sparse: the pair the bridges were made for (another pair is refused).
        bridges: the bridges.
        tokens: ``[n_seq, pos]`` held-out tokens, or :class:`TokenSplits` (its ``val`` split).
        batch_size: sequences per forward.
        progress: show a progress bar.

    Two passes over the data: the first gives the FVUs, the hybrid KLs, ``KL(y^d || y^s)`` and the
    means; the second the mean-ablated runs. ``2 + 2 * n_sites`` forwards per batch in each.
    """
    bridges.check_pair(dense, sparse)
    tokens = _as_tokens(tokens)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    device = bridges.W_enc.device
    tokens = tokens.to(device)
    batches = list(tokens.split(batch_size))
    sites = bridges.sites
    n_sites = len(sites)

    def zeros(*shape: int) -> Tensor:  # accumulators, in float64
        return torch.zeros(shape, dtype=torch.float64, device=device)

    sq_err = zeros(2, n_sites)  # [encoder, decoder] sums of squared errors
    kl_bridged = zeros(2, n_sites)  # [sparse from site, dense from site] sums of per-token KL
    kl_ablated = zeros(2, n_sites)
    sums = {"s": zeros(n_sites, bridges.cfg.d_sparse), "d": zeros(n_sites, bridges.cfg.d_dense)}  # per channel
    sq_sums = {"s": zeros(n_sites), "d": zeros(n_sites)}  # over channels too
    kl_pair = zeros()
    bar = tqdm(total=2 * len(batches), desc="evaluate bridges", unit="batch", disable=not progress)
    try:
        for batch in batches:
            y_dense, h_dense = capture(dense, batch, sites)
            y_sparse, h_sparse = capture(sparse, batch, sites)
            kl_pair += kl(y_dense, y_sparse).sum()
            for site in sites:
                i, h_d, h_s = site.index, h_dense[site.hook_name], h_sparse[site.hook_name]
                encoded, decoded = bridges.encode(site, h_d), bridges.decode(site, h_s)
                sq_err[0, i] += (encoded.double() - h_s.double()).pow(2).sum()
                sq_err[1, i] += (decoded.double() - h_d.double()).pow(2).sum()
                for side, h in (("s", h_s), ("d", h_d)):
                    sums[side][i] += h.double().sum(dim=(0, 1))
                    sq_sums[side][i] += h.double().pow(2).sum()
                kl_bridged[0, i] += kl(y_dense, run_replaced(sparse, batch, site, encoded)).sum()
                kl_bridged[1, i] += kl(y_dense, run_replaced(dense, batch, site, decoded)).sum()
            bar.update(1)
        n_tokens = tokens.numel()
        means = {side: total / n_tokens for side, total in sums.items()}
        # total variance: sum over tokens and channels of (h - mu)^2 = sum h^2 - N * sum_c mu_c^2
        variance = {side: sq_sums[side] - n_tokens * means[side].pow(2).sum(dim=1) for side in sums}
        for batch in batches:
            y_dense = dense(batch)
            for site in sites:
                i, shape = site.index, (*batch.shape, -1)
                kl_ablated[0, i] += kl(y_dense, run_replaced(sparse, batch, site, means["s"][i].expand(shape))).sum()
                kl_ablated[1, i] += kl(y_dense, run_replaced(dense, batch, site, means["d"][i].expand(shape))).sum()
            bar.update(1)
    finally:
        bar.close()
    fvu = torch.stack([sq_err[0] / variance["s"], sq_err[1] / variance["d"]])
    fvu = torch.where(torch.stack([variance["s"], variance["d"]]) > 0, fvu, math.nan)  # a constant residual has no variance
    fvu_l, bridged_l, ablated_l = fvu.tolist(), (kl_bridged / n_tokens).tolist(), (kl_ablated / n_tokens).tolist()
    rows = [
        SiteEvaluation(site, fvu_l[0][i], fvu_l[1][i], bridged_l[0][i], bridged_l[1][i], ablated_l[0][i], ablated_l[1][i])
        for i, site in enumerate(sites)
    ]
    return BridgeEvaluation(rows, float(kl_pair) / n_tokens, n_tokens)


__all__ = ["BridgeEvaluation", "SiteEvaluation", "evaluate_bridges"]
