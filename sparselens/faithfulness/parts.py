"""Checks ``nodes`` and ``attention``: do the circuit's parts do in the circuit what they do in the model?

- ``nodes``: per kept node, the Pearson correlation between its activation in the circuit and in
  the model over the task prompts (every position up to the read position), and its mean in each.
  ``sign_flip``: correlation <= -0.5; ``repurposed``: correlation < 0.5 (sign flips included), or
  constant in the model while it varies in the circuit (a node the model leaves silent on these
  prompts, e.g. a dead neuron, that carries a signal only in the circuit); ``constant``: no variance
  in one of the two (correlation undefined, left out of the summaries), and ``constant_in`` says where
  (``"model"``, ``"circuit"`` or ``"both"``; ``"neither"`` when the correlation is defined).
  Metrics ``node_corr_min`` and ``node_corr_median``.
- ``attention``: per head with a kept Q, K or V channel, the Jensen-Shannon divergence between the
  circuit's and the model's attention at the read position, the sink as a key of its own, averaged
  over prompts; both entropies; the model's largest weight on one key. ``uniform_in_circuit``: the
  head keeps V channels but no Q or no K channel (its scores no longer depend on the query or on the
  keys), while the model's head puts at least half its attention on one key. Metric ``attention_js_max``.
"""

from __future__ import annotations

import math

import torch

from sparselens.divergence import entropy, js
from sparselens.faithfulness.context import CheckResult, EvalContext, nan_with_note
from sparselens.faithfulness.registry import register

SIGN_FLIP = -0.5
REPURPOSED = 0.5
SHARP = 0.5


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Column-wise correlation of ``[n, k]`` matrices; NaN where a column is constant."""
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    denom = a.norm(dim=0) * b.norm(dim=0)
    return torch.where(denom > 1e-12 * (1 + denom), (a * b).sum(0) / denom.clamp_min(1e-300), torch.full_like(denom, math.nan))


def _varies(x: torch.Tensor) -> torch.Tensor:
    """Per column of ``[n, k]``: whether it takes more than one value (beyond rounding)."""
    x = x.double()
    return (x - x.mean(0)).norm(dim=0) > 1e-9 * (1 + x.norm(dim=0))


@register("nodes", description="per kept node: correlation of its activation in circuit and model; sign flips, repurposing")
def nodes(ctx: EvalContext) -> CheckResult:
    """Correlation of every kept node's activation between circuit and model; repurposed and sign-flipped nodes."""
    out = CheckResult()
    _, circuit_acts = ctx.circuit_run
    valid = ctx.valid
    corrs = []
    for site in ctx.model.node_sites:
        kept = ctx.mask[site].nonzero().flatten()
        if not len(kept):
            continue
        model_x = ctx.reference.activations[site.hook_name].flatten(2)[valid][:, kept]
        circ_x = circuit_acts[site.hook_name].flatten(2)[valid][:, kept]
        if not (torch.isfinite(model_x).all() and torch.isfinite(circ_x).all()):
            raise ValueError(f"NaN or inf activations at {site.hook_name} on the task prompts; the model or the "
                             "circuit's replacement values are broken")
        r = _pearson(model_x, circ_x)
        varies_model, varies_circuit = _varies(model_x).tolist(), _varies(circ_x).tolist()
        for j, index in enumerate(kept.tolist()):
            corr = float(r[j])
            name = site.node(index).name
            constant_in = "neither"  # a string, not None: reports write None and NaN alike (as null)
            if math.isnan(corr):
                constant_in = ("model" if varies_circuit[j] and not varies_model[j] else
                               "circuit" if varies_model[j] and not varies_circuit[j] else "both")
            out.nodes[name] = {
                "corr": corr, "mean_model": float(model_x[:, j].mean()), "mean_circuit": float(circ_x[:, j].mean()),
                "constant": math.isnan(corr), "constant_in": constant_in, "sign_flip": corr <= SIGN_FLIP,
                "repurposed": corr < REPURPOSED or constant_in == "model",
            }
            if not math.isnan(corr):
                corrs.append(corr)
    if corrs:
        out.metrics["node_corr_min"] = min(corrs)
        out.metrics["node_corr_median"] = float(torch.tensor(corrs).median())
    else:
        for key in ("node_corr_min", "node_corr_median"):
            nan_with_note(out, key, "the circuit has no kept node that varies in both the model and the circuit")
    # the nodes silent in the model first (the plainest repurposing), then by correlation
    bad = sorted(((v["corr"], k) for k, v in out.nodes.items() if v["repurposed"]), key=lambda t: (not math.isnan(t[0]), t[0]))
    if bad:
        flips = sum(out.nodes[k]["sign_flip"] for _, k in bad)
        silent = sum(math.isnan(c) for c, _ in bad)
        examples = ", ".join(f"{k} (constant in the model)" if math.isnan(c) else f"{k} (r = {c:.2f})" for c, k in bad[:3])
        why = (f"; {silent} of them constant in the model on these prompts but varying in the circuit" if silent else "")
        out.flags.append(f"{len(bad)} of the circuit's {len(out.nodes)} nodes are repurposed (their activation in the "
                         f"circuit correlates below {REPURPOSED} with the model's{why}; {flips} flip sign), e.g. {examples}.")
    return out


def _heads_with_kept_channels(ctx: EvalContext) -> list[tuple[int, int, dict[str, int]]]:
    reg, out = ctx.model.node_registry, []
    for layer in range(ctx.model.cfg.n_layers):
        counts = {kind: ctx.mask[reg.at(layer, kind)].view(ctx.model.cfg.n_heads, -1).sum(-1) for kind in ("q", "k", "v")}
        for head in range(ctx.model.cfg.n_heads):
            kept = {kind: int(c[head]) for kind, c in counts.items()}
            if any(kept.values()):
                out.append((layer, head, kept))
    return out


def _read_rows(ctx: EvalContext, acts: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """``[row, head, 1 + pos]`` attention of each prompt's read position: the sink's share first (0 without one)."""
    pattern = acts[f"blocks.{layer}.attn.hook_pattern"]  # [row, head, q, k]
    rows = torch.arange(pattern.shape[0], device=pattern.device)
    read = ctx.batch.read_pos.to(pattern.device)
    at_read = pattern[rows, :, read]  # [row, head, k]
    sink = acts.get(f"blocks.{layer}.attn.hook_sink")
    share = sink[rows, :, read][..., None] if sink is not None else torch.zeros_like(at_read[..., :1])
    return torch.cat([share, at_read], dim=-1)


@register("attention", description="per head: JS divergence of circuit and model attention at the read position; uniform heads")
def attention(ctx: EvalContext) -> CheckResult:
    """Jensen-Shannon divergence between circuit and model attention at the read position, per head with kept channels."""
    out = CheckResult()
    _, circuit_acts = ctx.circuit_run
    divergences = []
    for layer, head, kept in _heads_with_kept_channels(ctx):
        model_rows = _read_rows(ctx, ctx.reference.activations, layer)[:, head]
        circ_rows = _read_rows(ctx, circuit_acts, layer)[:, head]
        d = js(model_rows, circ_rows)
        sharpest = model_rows[:, 1:].max(-1)
        position = int(model_rows[:, 1:].argmax(-1).mode().values)
        row = {
            "layer": layer, "head": head, "kept_q": kept["q"], "kept_k": kept["k"], "kept_v": kept["v"],
            "js": float(d.mean()), "entropy_model": float(entropy(model_rows).mean()),
            "entropy_circuit": float(entropy(circ_rows).mean()), "model_max_attention": float(sharpest.values.mean()),
            "model_top_position": position,
            "uniform_in_circuit": kept["v"] > 0 and (kept["q"] == 0 or kept["k"] == 0) and float(sharpest.values.mean()) >= SHARP,
        }
        out.heads[f"L{layer}H{head}"] = row
        divergences.append(row["js"])
        if row["uniform_in_circuit"]:
            missing = "Q" if kept["q"] == 0 else "K"
            out.flags.append(f"L{layer} head {head} attends without its {missing} channels in the circuit (entropy "
                             f"{row['entropy_circuit']:.2f} nats vs the model's {row['entropy_model']:.2f}); the model "
                             f"puts {row['model_max_attention']:.2f} of its attention on one key (most often position "
                             f"{position}).")
        elif row["js"] > 0.2:
            out.flags.append(f"L{layer} head {head} attends differently in the circuit (JS divergence {row['js']:.2f} "
                             "nats from the model's attention at the read position).")
    if divergences:
        out.metrics["attention_js_max"] = max(divergences)
    else:
        nan_with_note(out, "attention_js_max", "the circuit keeps no Q, K or V channel")
    return out
