"""Least-squares initialisation of bridges: each map starts as the best affine map on a sample.

Per site ``i``, on the residuals of ``n`` held-in tokens, the decoder ``g_i`` becomes the ridge
regression of ``h^d_i`` on ``[h^s_i, 1]`` and the encoder's pre-activation ``h @ W_enc + b_enc``
the ridge regression of ``h^s_i`` on ``[h^d_i, 1]`` (the encoder's AbsTopK then keeps its top
``k``). Gradient training (:mod:`sparselens.bridges.train`) then starts from maps whose NMSE is
already the linear optimum, instead of spending its first thousand steps finding it from random
matrices.

Normal equations, accumulated in float64 over batches (memory ``O(d^2)``, not ``O(n d)``):
``W = (X^T X + ridge * tr(X^T X) / d * I)^-1 X^T Y`` with ``X = [h, 1]``; the bias column is not
regularised.

Examples:
    >>> bridges = Bridges.for_models(dense, sparse)
    >>> fit_least_squares(bridges, dense, sparse, splits.train[:256])
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.bridges.bridges import Bridges
from sparselens.bridges.hybrid import capture
from sparselens.bridges.sites import check_tokens
from sparselens.errors import InputError


def ridge_solve(xtx: Tensor, xty: Tensor, ridge: float) -> Tensor:
    """``(X^T X + lambda I')^-1 X^T Y`` for ``X`` whose last column is the constant 1 (not regularised).

    ``lambda = ridge * mean diagonal of X^T X`` over the non-constant columns. ``xtx [d+1, d+1]``,
    ``xty [d+1, d_out]`` -> ``[d+1, d_out]`` (the last row is the bias).
    """
    d = xtx.shape[0] - 1
    penalty = torch.zeros_like(xtx)
    penalty[:d, :d] = torch.eye(d, dtype=xtx.dtype, device=xtx.device) * ridge * xtx.diagonal()[:d].mean()
    return torch.linalg.solve(xtx + penalty, xty)


@torch.no_grad()
def fit_least_squares(
    bridges: Bridges, dense: Any, sparse: Any, tokens: Int[Tensor, "n_seq pos"], *, batch_size: int = 16, ridge: float = 1e-4,
    progress: bool = True,
) -> Bridges:
    """Set every encoder and decoder of ``bridges`` (in place) to the ridge regression on ``tokens``; returns them.

    Args:
        bridges: bridges made for ``dense`` and ``sparse`` (another pair is refused).
        dense, sparse: the models.
        tokens: ``[n_seq, pos]`` training tokens (every position of every sequence is a sample).
        batch_size: sequences per forward.
        ridge: the ridge strength, relative to the mean variance of the inputs (> 0 keeps a rank-
            deficient residual, e.g. a dead channel, solvable).
        progress: show a progress bar.
    """
    bridges.check_pair(dense, sparse)
    tokens = check_tokens(tokens, "fit_least_squares' tokens")
    if not ridge > 0:
        raise InputError(f"ridge must be > 0 (it keeps a rank-deficient residual solvable), got {ridge}")
    cfg, device = bridges.cfg, bridges.W_enc.device
    dims = {"d": cfg.d_dense, "s": cfg.d_sparse}
    # per site and direction: X^T X and X^T Y, X the input with a constant column appended
    gram = {side: torch.zeros(cfg.n_sites, d + 1, d + 1, dtype=torch.float64, device=device) for side, d in dims.items()}
    cross = {side: torch.zeros(cfg.n_sites, dims[side] + 1, dims[other], dtype=torch.float64, device=device)
             for side, other in (("d", "s"), ("s", "d"))}
    for batch in tqdm(tokens.to(device).split(batch_size), desc="least-squares bridges", unit="batch", disable=not progress):
        h = {"d": capture(dense, batch, bridges.sites)[1], "s": capture(sparse, batch, bridges.sites)[1]}
        for site in bridges.sites:
            x = {side: h[side][site.hook_name].reshape(-1, dims[side]).double() for side in dims}
            for side, other in (("d", "s"), ("s", "d")):
                with_one = torch.cat([x[side], torch.ones_like(x[side][:, :1])], dim=1)
                gram[side][site.index] += with_one.T @ with_one
                cross[side][site.index] += with_one.T @ x[other]
    for site in bridges.sites:
        i = site.index
        enc = ridge_solve(gram["d"][i], cross["d"][i], ridge)  # dense -> sparse pre-activation
        dec = ridge_solve(gram["s"][i], cross["s"][i], ridge)  # sparse -> dense
        bridges.W_enc[i].copy_(enc[:-1])
        bridges.b_enc[i].copy_(enc[-1])
        bridges.W_dec[i].copy_(dec[:-1])
        bridges.b_dec[i].copy_(dec[-1])
    return bridges


__all__ = ["fit_least_squares", "ridge_solve"]
