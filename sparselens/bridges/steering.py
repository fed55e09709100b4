"""Steering a dense model through one sparse channel and the bridge decoder (issue 13 item 5).

METHOD.md section 5: take one sparse residual channel ``c`` at bridge site ``i``, its activation
difference between a counterfactual prompt B and the presented prompt A at every token, push it
through ``c``'s decoder row and add it to the dense residual at site ``i`` with strength ``s``::

    edit[t] = s * ratio * (h^s_B[t', c] - h^s_A[t, c]) * W_dec[i][c]        [d_dense], per A position t

``t'`` is the B position aligned with ``t`` (:func:`steer` says how), ``W_dec[i][c]`` is row ``c``
of the decoder (``W_dec[i]`` is ``[d_sparse d_dense]``), and ``ratio`` is
:func:`residual_rms_ratio`: ``rms_dense / rms_sparse``, the factor that maps a sparse-space magnitude
to the dense space. The bias ``b_dec`` cancels in a difference. The edit is a hook on the dense
model's ordinary forward (:func:`~sparselens.bridges.hybrid.add_hooks`), never a second forward.

Two controls get the same treatment at every ``s``: a random dense direction per token with the
edit's norm at that token, and another sparse channel's decoder row with its own difference.

Examples:
    >>> channels = circuit_residual_channels(circuit, sparse, "L1.resid_pre")
    >>> result = steer(dense, sparse, bridges, "L1.resid_pre", channels[0], task.batch(n=64, split="test"))
    >>> print(result.table()); result.plot("steering.png")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.bridges.bridges import Bridges, model_device
from sparselens.bridges.hybrid import add_hooks, capture
from sparselens.bridges.sites import BridgeSite, SiteLike, bridge_sites, check_pair, check_tokens, resolve_site
from sparselens.divergence import kl
from sparselens.errors import InputError
from sparselens.files import save_figure_atomic
from sparselens.tasks.base import TaskBatch
from sparselens.wiring import READ_NORM, RESIDUAL_READS, RESIDUAL_WRITES, NodeKind

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit


# ---------------------------------------------------------------------------- choosing a channel


def circuit_residual_channels(circuit: "Circuit", model: "HookedSparseTransformer", site: Optional[SiteLike] = None) -> list[int]:
    """The residual dimensions of ``model`` (the sparse model ``circuit`` was pruned from) that the circuit uses.

    Residual nodes (``attn_in``, ``mlp_in`` reads and ``attn_out``, ``mlp_out`` writes) have one
    channel per residual dimension, so node ``L1.attn_in[7]`` is dimension 7. A read counts only
    where its norm's gain is nonzero, as in :func:`~sparselens.prune.edges.residual_links`.

    Args:
        circuit: the circuit (its fingerprint must be ``model``'s).
        model: the sparse model.
        site: a bridge site (index, hook name or label). With it: the dimensions that the circuit's
            kept reads at or after the site read, which are the ones an edit there reaches the circuit
            through (block ``l``'s ``attn_in`` reads site ``2l``, its ``mlp_in`` site ``2l + 1``).
            At the final site, which only the unembedding reads, the dimensions the circuit's kept
            writes wrote. Without it: every dimension any kept residual node reads or writes.

    Returns:
        Sorted residual dimensions, channels of the sparse residual ``[0, d_model)``.

    To pick the quote-type channel of a ``single_double_quote`` circuit, take the one among these
    whose value at the read position differs most between the A and B prompts:
    :func:`most_differing_channel`.
    """
    mask = circuit.node_mask(model)
    registry = model.node_registry
    n_layers = model.cfg.n_layers
    index = None if site is None else resolve_site(bridge_sites(n_layers), site).index
    channels: set[int] = set()
    for layer, block in enumerate(model.blocks):
        for kind in RESIDUAL_READS:
            read_at = 2 * layer + (kind is NodeKind.MLP_IN)  # the bridge site this read reads
            if index is None or (index < 2 * n_layers and read_at >= index):
                node_site = registry.at(layer, kind)
                seen = mask[node_site] & (getattr(block, READ_NORM[kind]).w.detach().cpu() != 0)
                channels.update(seen.nonzero().flatten().tolist())
        for kind in RESIDUAL_WRITES:
            if index is None or index == 2 * n_layers:
                channels.update(mask[registry.at(layer, kind)].nonzero().flatten().tolist())
    return sorted(channels)


# ---------------------------------------------------------------------------- the RMS ratio


@torch.no_grad()
@torch.no_grad()
def most_differing_channel(circuit: "Circuit", sparse: Any, site: SiteLike, batch: TaskBatch) -> int:
    """The circuit's residual channel at ``site`` whose value at the read position differs most between A and B.

    Among :func:`circuit_residual_channels` at the site, the one with the largest mean over pairs of
    ``|h^s_B[read_B, c] - h^s_A[read_A, c]|``: for ``single_double_quote``, the quote-type channel.

    Raises:
        InputError: the circuit reads no residual channel at or after the site.
    """
    resolved = resolve_site(bridge_sites(sparse.cfg.n_layers), site)
    channels = circuit_residual_channels(circuit, sparse, resolved)
    if not channels:
        raise InputError(f"the circuit reads no residual channel at or after {resolved.label}; choose another site")
    batch = _check_pairs(batch, sparse.cfg.d_vocab)
    h = capture(sparse, batch.tokens.to(model_device(sparse)), [resolved])[1][resolved.hook_name][:, :, channels]
    n, rows = batch.n_pairs, torch.arange(batch.n_pairs)
    read = batch.read_pos.to(h.device)
    moved = (h[n + rows, read[n:]] - h[rows, read[:n]]).abs().mean(0)
    return channels[int(moved.argmax())]


def residual_rms_ratio(dense: Any, sparse: Any, site: SiteLike, tokens: Int[Tensor, "n_seq pos"], *, batch_size: int = 16) -> float:
    """``rms_dense / rms_sparse`` at ``site`` on reference ``tokens``: the factor that maps a sparse-space magnitude to the dense space.

    ``rms = sqrt(mean over sequences, positions and channels of h^2)`` of each model's residual at
    the site (in float64), so a sparse channel that moves by ``delta`` moves by
    ``ratio * delta`` in dense units. Pass held-out text (e.g. ``splits.val[:64]``) for the
    pretraining distribution.

    Args:
        dense, sparse: the two models (same number of layers and vocabulary).
        site: a bridge site (index, hook name or label; a misspelt name gets the closest one).
        tokens: ``[n_seq, pos]`` reference tokens.
        batch_size: sequences per forward.
    """
    resolved = resolve_site(check_pair(dense, sparse), site)
    tokens = check_tokens(tokens, "residual_rms_ratio's reference tokens")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    rms = []
    for model in (dense, sparse):
        device = model_device(model)
        total, count = 0.0, 0
        for chunk in tokens.split(batch_size):
            h = capture(model, chunk.to(device), [resolved])[1][resolved.hook_name].detach()
            total += float(h.double().pow(2).sum())
            count += h.numel()
        rms.append(math.sqrt(total / count))
    if not (math.isfinite(rms[0]) and math.isfinite(rms[1]) and rms[1] > 0):
        raise InputError(f"the residual RMS at {resolved.hook_name} is dense {rms[0]}, sparse {rms[1]}: no finite ratio (NaN weights?)")
    return rms[0] / rms[1]


# ---------------------------------------------------------------------------- alignment of a pair


@dataclass(frozen=True)
class _Alignment:
    """Which B position each A position is compared with, and the position sets of :func:`steer`.

    Attributes:
        partner: [pair pos] the aligned B position (clamped into range; meaningful where ``edited``).
        edited: [pair pos] A positions with a partner: where the edit is added.
        before: [pair pos] A positions before the pair's first differing token.
        unrelated: [pair pos] edited positions at or after the first difference, other than A's read position.
    """

    partner: Int[Tensor, "pair pos"]
    edited: Bool[Tensor, "pair pos"]
    before: Bool[Tensor, "pair pos"]
    unrelated: Bool[Tensor, "pair pos"]


def _align(batch: TaskBatch) -> _Alignment:
    n = batch.n_pairs
    tokens, read = batch.tokens, batch.read_pos.to(batch.tokens.device)
    read_a, read_b = read[:n, None], read[n:, None]
    t = torch.arange(tokens.shape[1], device=tokens.device)[None]
    shared = torch.minimum(read_a, read_b)
    differs = (tokens[:n] != tokens[n:]) & (t <= shared)
    first = torch.where(differs.any(1, keepdim=True), differs.int().argmax(1, keepdim=True), shared + 1)
    before = t < first
    partner = torch.where(before, t, t + read_b - read_a)  # after the first difference: aligned at the read positions
    edited = (t <= read_a) & (before | ((partner >= first) & (partner <= read_b)))
    unrelated = edited & ~before & (t != read_a)
    return _Alignment(partner.clamp(0, tokens.shape[1] - 1), edited, before, unrelated)


# ---------------------------------------------------------------------------- the result


@dataclass
class SteeringResult:
    """:func:`steer`'s numbers, one entry per strength (probabilities averaged over pairs, KL in nats per token).

    Attributes:
        site: the bridge site edited.
        channel: the sparse channel steered through; control_channel: the control's other channel.
        ratio: the ``rms_dense / rms_sparse`` factor the edits were scaled by.
        strengths: [n_s] the strengths ``s``.
        p_target: [n_s] the dense model's P(counterfactual target) at A's read position, edited.
        p_target_random_dense: [n_s] the same with a random dense direction of the edit's norm per token.
        p_target_random_channel: [n_s] the same through ``control_channel``'s decoder row.
        kl_unrelated, kl_unrelated_random_dense, kl_unrelated_random_channel: [n_s]
            ``KL(dense unedited || dense edited)`` at the unrelated positions (:func:`steer`), per edit.
        kl_before_difference: [n_s] the edit's KL before each pair's first differing token, where
            the edit is zero by causality: 0 up to rounding, a sanity check.
        p_target_counterfactual: the unedited dense model's P(target) on the B prompts themselves.
        n_pairs: pairs; n_unrelated, n_before: tokens in the two KL averages.
    """

    site: BridgeSite
    channel: int
    control_channel: int
    ratio: float
    strengths: Float[Tensor, " n_s"]
    p_target: Float[Tensor, " n_s"]
    p_target_random_dense: Float[Tensor, " n_s"]
    p_target_random_channel: Float[Tensor, " n_s"]
    kl_unrelated: Float[Tensor, " n_s"]
    kl_unrelated_random_dense: Float[Tensor, " n_s"]
    kl_unrelated_random_channel: Float[Tensor, " n_s"]
    kl_before_difference: Float[Tensor, " n_s"]
    p_target_counterfactual: float
    n_pairs: int
    n_unrelated: int
    n_before: int

    def _columns(self) -> dict[str, Tensor]:
        return {
            "strength": self.strengths, "p_target": self.p_target, "p_target_random_dense": self.p_target_random_dense,
            "p_target_random_channel": self.p_target_random_channel, "kl_unrelated": self.kl_unrelated,
            "kl_unrelated_random_dense": self.kl_unrelated_random_dense,
            "kl_unrelated_random_channel": self.kl_unrelated_random_channel, "kl_before_difference": self.kl_before_difference,
        }

    def table(self) -> str:
        """A markdown table: per strength, P(target) and the unrelated-position KL of the edit and both controls."""
        lines = [
            f"steering through sparse channel {self.channel} at {self.site.label} (`{self.site.hook_name}`), "
            f"control channel {self.control_channel}, ratio rms_dense/rms_sparse = {self.ratio:.4g}; {self.n_pairs} pairs",
            f"dense P(target) on the counterfactual prompts themselves: {self.p_target_counterfactual:.4f}; "
            f"KL over {self.n_unrelated} unrelated tokens (and {self.n_before} before the first difference)",
            "",
            "| s | P(target): edit | random dense | random channel | KL unrelated: edit | random dense | random channel "
            "| KL before difference |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in zip(*(c.tolist() for c in self._columns().values())):
            lines.append(f"| {row[0]:.2f} | " + " | ".join(f"{v:.4f}" for v in row[1:]) + " |")
        return "\n".join(lines)

    def plot(self, path: Optional[Union[str, Path]] = None) -> Any:
        """A matplotlib figure: P(target) against ``s`` (left), unrelated-position KL (right); saved to ``path`` (.png, .svg, .html...)."""
        from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

        s = self.strengths.tolist()
        fig = Figure(figsize=(11, 4.2))
        p_ax, kl_ax = fig.subplots(1, 2)
        variants = (("sparse channel edit", "o-", "C0"), ("random dense direction (norm-matched)", "s--", "C1"),
                    (f"random sparse channel ({self.control_channel})", "^:", "C2"))
        for values, (label, style, color) in zip((self.p_target, self.p_target_random_dense, self.p_target_random_channel), variants):
            p_ax.plot(s, values.tolist(), style, color=color, label=label)
        p_ax.axhline(self.p_target_counterfactual, color="gray", linestyle="--", label="dense on the counterfactual prompt")
        p_ax.set_ylabel("dense P(counterfactual target)")
        p_ax.set_title("P(target) at the read position")
        for values, (label, style, color) in zip((self.kl_unrelated, self.kl_unrelated_random_dense, self.kl_unrelated_random_channel), variants):
            kl_ax.plot(s, values.tolist(), style, color=color, label=label)
        kl_ax.plot(s, self.kl_before_difference.tolist(), "x", color="gray", label="edit, before the first difference (0)")
        kl_ax.set_ylabel("KL(unedited || edited), nats per token")
        kl_ax.set_title(f"KL at unrelated positions ({self.n_unrelated} tokens)")
        for ax in (p_ax, kl_ax):
            ax.set_xlabel("strength s")
            ax.legend(fontsize="small")
        fig.suptitle(f"steering the dense model through sparse channel {self.channel} at {self.site.label} ({self.n_pairs} pairs)")
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
        if path is not None:
            save_figure_atomic(fig, path)
        return fig

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the settings, the counts and one list per column."""
        return {
            "site": self.site.hook_name, "label": self.site.label, "channel": self.channel, "control_channel": self.control_channel,
            "ratio": self.ratio, "p_target_counterfactual": self.p_target_counterfactual, "n_pairs": self.n_pairs,
            "n_unrelated": self.n_unrelated, "n_before": self.n_before, **{k: v.tolist() for k, v in self._columns().items()},
        }


# ---------------------------------------------------------------------------- steering


def _check_strengths(strengths: Union[Tensor, Sequence[float]]) -> Float[Tensor, " n_s"]:
    values = torch.as_tensor(strengths, dtype=torch.float64).cpu()
    if values.dim() != 1 or values.numel() == 0:
        raise InputError(f"strengths must be a non-empty 1-D sequence of numbers in [0, 1], got shape {tuple(values.shape)}")
    bad = values[~((values >= 0) & (values <= 1))]  # NaN fails both
    if bad.numel():
        raise InputError(f"strengths must lie in [0, 1] (0: no edit, 1: the full difference); got {bad.tolist()}")
    return values


def _check_pairs(batch: Any, d_vocab: int) -> TaskBatch:
    if not isinstance(batch, TaskBatch):
        raise InputError(
            f"steer needs a TaskBatch of prompt pairs (task.batch(n=...)), got {type(batch).__name__}; its A rows are "
            "the presented prompts and its B rows their counterfactuals"
        )
    n = batch.n_pairs
    rows = batch.tokens.shape[0] if batch.tokens.dim() == 2 else -1
    if n < 1 or rows != 2 * n or batch.read_pos.shape != (rows,) or batch.correct.shape != (rows,):
        raise InputError(
            f"the batch is not pairs: {n} pairs need 2n = {2 * n} token rows [A prompts, then B prompts] with one read "
            f"position and target each, got tokens {tuple(batch.tokens.shape)}, read_pos {tuple(batch.read_pos.shape)}, "
            f"correct {tuple(batch.correct.shape)}; build it with task.batch or TaskBatch.select"
        )
    if batch.padding_side != "right":
        raise InputError("steer aligns a pair's prompts from their first token; build the batch with padding_side='right'")
    if int(batch.read_pos.min()) < 0 or int(batch.read_pos.max()) >= batch.tokens.shape[1]:
        raise InputError(f"the batch's read positions must lie in [0, {batch.tokens.shape[1]}), got {batch.read_pos.tolist()}")
    if int(batch.correct.min()) < 0 or int(batch.correct.max()) >= d_vocab:
        raise InputError(f"the batch's target ids must lie in [0, {d_vocab}) (the dense vocabulary)")
    return batch


def _check_channel(channel: Any, d_sparse: int, what: str) -> int:
    if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < d_sparse:
        raise InputError(f"{what} {channel!r} is out of range: the sparse residual has channels 0..{d_sparse - 1}")
    return channel


def _masked_mean(values: Float[Tensor, "pair pos"], mask: Bool[Tensor, "pair pos"]) -> float:
    return float(values[mask].double().mean()) if bool(mask.any()) else math.nan


@torch.no_grad()
def steer(
    dense: Any,
    sparse: Any,
    bridges: Bridges,
    site: SiteLike,
    channel: int,
    batch: TaskBatch,
    strengths: Union[Tensor, Sequence[float]] = torch.linspace(0, 1, 11),
    *,
    ratio: Optional[float] = None,
    reference_tokens: Optional[Int[Tensor, "n_seq pos"]] = None,
    control_channel: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
) -> SteeringResult:
    """Steer the dense model with sparse ``channel``'s A-to-B difference, next to two controls.

    Each A prompt of ``batch`` is presented with its pair's B prompt as the counterfactual.
    ``delta[t] = h^s_B[t', c] - h^s_A[t, c]`` at every A position ``t``, with ``t'`` aligned as
    follows (the prompts start at position 0, right padding): before the pair's first differing
    token ``t' = t``; from it on ``t' = t + read_B - read_A`` (aligned at the read positions, so
    the read positions and any shared suffix pair up). A positions whose ``t'`` falls outside B's
    prompt from the first difference on, and A's padding, get no edit. Equal-length pairs are
    compared position by position. The dense run adds ``s * ratio * delta[t] * W_dec[site][c]``
    to the residual at ``site`` (a hook on its forward: :func:`~sparselens.bridges.hybrid.add_hooks`)
    and reads P(B's target) at A's read position, softmax over the full vocabulary, averaged over pairs.

    Controls, at each ``s``: (a) a random Gaussian direction per token (seeded), scaled to the
    edit's norm at that token; (b) ``control_channel``'s decoder row with its own delta and the
    same scaling. Unrelated positions: the edited A positions at or after the first difference,
    other than A's read position. The edit changes them, but the task asks nothing there, so
    ``KL(dense unedited || dense edited)`` averaged over them measures its side effects. Before
    the first difference both prompts are the same prefix: delta, and the KL there
    (``kl_before_difference``), are 0 up to rounding.

    Args:
        dense, sparse: the pair ``bridges`` were made for (another pair is refused).
        bridges: the bridges; ``W_dec[site]`` is ``[d_sparse d_dense]``, row ``c`` is channel ``c``.
        site: a bridge site (index, hook name or label).
        channel: the sparse residual channel (e.g. from :func:`circuit_residual_channels`).
        batch: ``n`` prompt pairs, ``2n`` rows (A rows, then B rows), right padded.
        strengths: ``s`` values in [0, 1].
        ratio: the sparse-to-dense factor; default :func:`residual_rms_ratio` on ``reference_tokens``.
            Pass 1.0 to rely on the decoder row's own scale.
        reference_tokens: ``[n_seq pos]`` tokens for the RMS ratio (default: ``batch.tokens``).
        control_channel: the control's sparse channel (default: a random other one, seeded).
        seed: seeds the random direction and the control channel.
        progress: show a progress bar over strengths.

    Returns:
        A :class:`SteeringResult` (``.table()``, ``.plot(path)``, ``.to_dict()``).
    """
    bridges.check_pair(dense, sparse)
    resolved = bridges.site(site)
    d_sparse = bridges.cfg.d_sparse
    channel = _check_channel(channel, d_sparse, "channel")
    values = _check_strengths(strengths)
    batch = _check_pairs(batch, dense.cfg.d_vocab)
    if d_sparse < 2:
        raise InputError("the random-channel control needs a sparse residual of at least 2 channels")
    if ratio is None:
        ratio = residual_rms_ratio(dense, sparse, resolved, batch.tokens if reference_tokens is None else reference_tokens)
    elif reference_tokens is not None:
        raise InputError("pass ratio= or reference_tokens= (to compute the ratio from), not both")
    elif isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (math.isfinite(ratio) and ratio > 0):
        raise InputError(f"ratio must be a positive finite number (rms_dense / rms_sparse), got {ratio!r}")
    scale = float(ratio)

    n, width = batch.n_pairs, batch.tokens.shape[1]
    device = model_device(dense)
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, width, bridges.cfg.d_dense, generator=gen).to(device)
    if control_channel is None:
        control_channel = int(torch.randint(d_sparse - 1, (1,), generator=gen))
        control_channel += int(control_channel >= channel)  # uniform over the other channels
    elif _check_channel(control_channel, d_sparse, "control_channel") == channel:
        raise InputError(f"control_channel must differ from channel ({channel})")

    align = _align(batch.to(device))
    h_sparse = capture(sparse, batch.tokens.to(model_device(sparse)), [resolved])[1][resolved.hook_name].to(device)
    W_dec = bridges.W_dec[resolved.index].detach().to(device)

    def unit_edit(c: int) -> Float[Tensor, "pair pos d_dense"]:  # the edit at s = 1 through channel c
        h = h_sparse[..., c].float()
        delta = torch.where(align.edited, h[n:].gather(1, align.partner) - h[:n], 0.0)
        return scale * delta[..., None] * W_dec[c].float()

    edit = unit_edit(channel)
    edits = (edit, edit.norm(dim=-1, keepdim=True) * direction / direction.norm(dim=-1, keepdim=True), unit_edit(control_channel))

    tokens_a, tokens_b = batch.tokens[:n].to(device), batch.tokens[n:].to(device)
    read_a, read_b = batch.read_pos[:n].to(device), batch.read_pos[n:].to(device)
    target = batch.correct[n:].to(device)  # B's answer: what the edit should make A predict
    rows = torch.arange(n, device=device)

    def p_target(logits: Float[Tensor, "pair pos d_vocab"], read: Int[Tensor, " pair"]) -> float:
        return float(torch.softmax(logits[rows, read].float(), dim=-1)[rows, target].double().mean())

    plain = dense.run_with_hooks(tokens_a, fwd_hooks=[])
    p_counterfactual = p_target(dense.run_with_hooks(tokens_b, fwd_hooks=[]), read_b)
    p = torch.zeros(3, len(values), dtype=torch.float64)
    kl_unrelated = torch.zeros_like(p)
    kl_before = torch.zeros(len(values), dtype=torch.float64)
    for j, s in enumerate(tqdm(values.tolist(), desc="steer", unit="strength", disable=not progress)):
        for v, unit in enumerate(edits):
            logits = dense.run_with_hooks(tokens_a, fwd_hooks=add_hooks(resolved, s * unit))
            p[v, j] = p_target(logits, read_a)
            divergence = kl(plain, logits)
            kl_unrelated[v, j] = _masked_mean(divergence, align.unrelated)
            if v == 0:
                kl_before[j] = _masked_mean(divergence, align.before)
    return SteeringResult(
        site=resolved, channel=channel, control_channel=control_channel, ratio=scale, strengths=values,
        p_target=p[0], p_target_random_dense=p[1], p_target_random_channel=p[2], kl_unrelated=kl_unrelated[0],
        kl_unrelated_random_dense=kl_unrelated[1], kl_unrelated_random_channel=kl_unrelated[2], kl_before_difference=kl_before,
        p_target_counterfactual=p_counterfactual, n_pairs=n, n_unrelated=int(align.unrelated.sum()), n_before=int(align.before.sum()),
    )


__all__ = ["SteeringResult", "circuit_residual_channels", "most_differing_channel", "residual_rms_ratio", "steer"]
