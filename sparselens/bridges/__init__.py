"""Bridges between a dense and a weight-sparse model (METHOD.md section 5; docs/bridges.md).

Per residual site ``i`` (2L + 1 of them, :mod:`~sparselens.bridges.sites`) an encoder
``f_i(h) = AbsTopK(W_enc h + b)`` (dense -> sparse) and a linear decoder ``g_i`` (sparse -> dense)
(:class:`Bridges`); hybrid runs as hooks on each model's own forward
(:mod:`~sparselens.bridges.hybrid`); the loss (:mod:`~sparselens.bridges.losses`); training
(:func:`train_bridges`, ``sparselens bridges train``) and per-site evaluation against baselines
(:func:`evaluate_bridges`, ``sparselens bridges evaluate``).

Examples:
    >>> bridges = train_bridges(dense, sparse, tokens=splits, steps=2000, out_dir="runs/bridges")
    >>> result = evaluate_bridges(dense, sparse, bridges, splits.val)
    >>> print(result.table()); result.plot("bridges.png")
"""

from sparselens.bridges.bridges import Bridges, BridgesConfig
from sparselens.bridges.evaluate import BridgeEvaluation, SiteEvaluation, evaluate_bridges
from sparselens.bridges.fit import fit_least_squares
from sparselens.bridges.hybrid import add_hooks, capture, dense_from_site, replace_hooks, run_replaced, sparse_from_site
from sparselens.bridges.losses import BridgeLosses, bridge_losses, mean_kl, nmse
from sparselens.bridges.sites import BridgeSite, bridge_sites, check_pair, resolve_site
from sparselens.bridges.steering import SteeringResult, circuit_residual_channels, most_differing_channel, residual_rms_ratio, steer
from sparselens.bridges.train import BridgeTrainConfig, BridgeTrainer, train_bridges

__all__ = [
    "BridgeEvaluation",
    "BridgeLosses",
    "BridgeSite",
    "BridgeTrainConfig",
    "BridgeTrainer",
    "Bridges",
    "BridgesConfig",
    "SiteEvaluation",
    "SteeringResult",
    "add_hooks",
    "bridge_losses",
    "bridge_sites",
    "capture",
    "check_pair",
    "circuit_residual_channels",
    "dense_from_site",
    "evaluate_bridges",
    "fit_least_squares",
    "mean_kl",
    "most_differing_channel",
    "nmse",
    "replace_hooks",
    "residual_rms_ratio",
    "resolve_site",
    "run_replaced",
    "sparse_from_site",
    "steer",
    "train_bridges",
]
