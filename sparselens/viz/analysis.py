"""What the plots and the viewer show, computed once: the model against a circuit, and top activations.

- :func:`model_and_circuit`: the full model's run on a batch (its
  :class:`~sparselens.interventions.ReferenceRun`: logits, node activations, attention patterns and
  sinks, one ``run_with_cache``) and the circuit's run on the same batch (``run_with_cache`` under
  ``model.hooks(fwd_hooks=circuit.hooks(model, reference))``), so a circuit's activations are what
  its downstream layers read: a node outside it shows its replacement (zero, mean or resampled).
- :func:`top_activations`: the corpus rows where nodes are most active, ranked by ``|activation|``.

Examples:
    >>> runs = model_and_circuit(model, batch, circuit, names=["blocks.0.mlp.hook_post"])  # doctest: +SKIP
    >>> runs.full["blocks.0.mlp.hook_post"], runs.circuit["blocks.0.mlp.hook_post"]       # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.interventions.ablation import Ablation
from sparselens.interventions.reference import ReferenceRun
from sparselens.nodes import Node, NodeSite
from sparselens.tasks.base import TaskBatch

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit

TokensLike = Union[str, Int[Tensor, " pos"], Int[Tensor, "batch pos"], TaskBatch]
Batch = Union[TaskBatch, Int[Tensor, "batch pos"]]


# ----------------------------------------------------------------------------------- inputs
@dataclass
class Prompts:
    """Prompts to run and show.

    Attributes:
        batch: a TaskBatch, or tokens ``[batch, pos]``, on the model's device.
        lengths: per row, how many tokens to show (a TaskBatch's rows end at ``read_pos``, hiding padding).
    """

    batch: Batch
    lengths: list[int]

    @property
    def tokens(self) -> Int[Tensor, "batch pos"]:
        return self.batch.tokens if isinstance(self.batch, TaskBatch) else self.batch


def as_prompts(model: "HookedSparseTransformer", tokens: TokensLike) -> Prompts:
    """Text, token ids ``[pos]`` / ``[batch, pos]`` or a TaskBatch as :class:`Prompts` (checked against ``n_ctx``)."""
    if isinstance(tokens, TaskBatch):
        return Prompts(tokens.to(model.W_E.device), [int(p) + 1 for p in tokens.read_pos])
    if isinstance(tokens, str):
        toks = model.to_tokens(tokens)
    elif isinstance(tokens, Tensor):
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor of token ids, got dtype {tokens.dtype}")
        if tokens.ndim not in (1, 2) or tokens.numel() == 0:
            raise ValueError(f"tokens must have shape [pos] or [batch, pos] and not be empty, got {tuple(tokens.shape)}")
        toks = tokens if tokens.ndim == 2 else tokens[None]
    else:
        raise TypeError(f"tokens must be text, a token tensor or a TaskBatch, got {type(tokens).__name__}")
    if toks.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{toks.shape[1]} tokens exceed the model's context n_ctx={model.cfg.n_ctx}; shorten the prompt")
    return Prompts(toks.to(model.W_E.device), [toks.shape[1]] * toks.shape[0])


def check_rows(rows: Optional[Sequence[int]], n_rows: int) -> list[int]:
    """``rows`` as ints (default all ``n_rows``), each checked to be in range."""
    rows = list(range(n_rows)) if rows is None else [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < n_rows]
    if bad or not rows:
        raise IndexError(f"prompt index {bad[0] if bad else '(none given)'} is out of range: there are {n_rows} "
                         f"prompts (0..{n_rows - 1})")
    return rows


def site_values(acts: dict[str, Tensor], site: NodeSite, indices: Sequence[int]) -> Float[Tensor, "batch pos n"]:
    """The activations of ``site``'s flat channels ``indices`` (head-major for Q/K/V), as float32."""
    return acts[site.hook_name].flatten(2)[..., list(indices)].float()


def node_values(acts: dict[str, Tensor], node: Node) -> Float[Tensor, "batch pos"]:
    """One node's activations ``[batch, pos]``, as float32."""
    return site_values(acts, node.site, [node.index])[..., 0]


def by_site(model: "HookedSparseTransformer", nodes: Iterable[Node]) -> dict[str, tuple[NodeSite, list[int]]]:
    """Flat channel indices of ``nodes`` per site name, sites in first-seen order."""
    found: dict[str, tuple[NodeSite, list[int]]] = {}
    for node in nodes:
        found.setdefault(node.site.name, (model.node_registry.site(node.site.name), []))[1].append(node.index)
    return found


# ----------------------------------------------------------------------------------- model and circuit
@dataclass
class ModelAndCircuit:
    """The full model's and a circuit's runs on one batch.

    Attributes:
        reference: the full model's run (:class:`~sparselens.interventions.ReferenceRun`): ``logits``
            ``[batch, pos, d_vocab]`` and ``activations`` of every node site, ``hook_pattern`` and
            ``hook_sink``.
        circuit_logits: ``[batch, pos, d_vocab]`` the circuit's logits (None without a circuit).
        circuit: hook name -> the circuit's activation, for the names asked for (None without a circuit).
    """

    reference: ReferenceRun
    circuit_logits: Optional[Float[Tensor, "batch pos d_vocab"]] = None
    circuit: Optional[dict[str, Tensor]] = None

    @property
    def logits(self) -> Float[Tensor, "batch pos d_vocab"]:
        """The full model's logits."""
        return self.reference.logits

    @property
    def full(self) -> dict[str, Tensor]:
        """Hook name -> the full model's activation (the reference run's)."""
        return self.reference.activations


@torch.no_grad()
def model_and_circuit(
    model: "HookedSparseTransformer", batch: Batch, circuit: Optional["Circuit"] = None, names: Iterable[str] = ()
) -> ModelAndCircuit:
    """Run the full model once on ``batch`` and, given a circuit, the circuit on the same batch.

    Args:
        batch: a TaskBatch or tokens ``[batch, pos]`` on the model's device.
        circuit: a :class:`~sparselens.prune.Circuit` of this model (checked by fingerprint).
        names: hook names to cache in the circuit's run (node sites, ``hook_pattern``, ``hook_sink``).

    Raises:
        ValueError: a circuit of another model; a resample-ablation circuit on plain tokens (its
            replacements come from the batch's prompts with the other answer).
    """
    if circuit is not None and Ablation.parse(circuit.ablation).needs == "resample" and not isinstance(batch, TaskBatch):
        raise ValueError("this circuit uses resample ablation, which takes each prompt's replacement activations from "
                         "a prompt of the same batch with the other answer; pass a TaskBatch (task.batch(...)) and "
                         "pick the prompt to show with prompt=i")
    reference = ReferenceRun.of(model, batch)
    if circuit is None:
        return ModelAndCircuit(reference)
    wanted = set(names)
    with model.hooks(fwd_hooks=circuit.hooks(model, reference)):
        logits, cache = model.run_with_cache(reference.tokens, names_filter=lambda name: name in wanted)
    return ModelAndCircuit(reference, logits, dict(cache.cache_dict))


# ----------------------------------------------------------------------------------- top activations
@dataclass
class Snippets:
    """A node's top activations over a token corpus, each with the tokens around it.

    Attributes:
        node: the node's name.
        values: ``[k]`` the activation at each snippet's peak (signed), largest ``|value|`` first.
        rows, positions: ``[k]`` where each peak is (corpus row, position in the row).
        tokens: per snippet, token ids of the window ``[position - before, position + after]``
            clipped to the row.
        activations: per snippet, the node's activation on each window token (same length as ``tokens``).
        centers: per snippet, the index of the peak token within its window.
        n_tokens: how many corpus tokens were scanned.
    """

    node: str
    values: Float[Tensor, " k"]
    rows: Int[Tensor, " k"]
    positions: Int[Tensor, " k"]
    tokens: list[Int[Tensor, " window"]]
    activations: list[Float[Tensor, " window"]]
    centers: list[int]
    n_tokens: int


def _check_corpus(model: "HookedSparseTransformer", corpus_tokens: Tensor, k: int, before: int, after: int,
                  batch_size: int) -> None:
    if before < 0 or after < 0:
        raise ValueError(f"window must be non-negative (tokens before, after), got {(before, after)!r}")
    if not isinstance(corpus_tokens, Tensor) or corpus_tokens.ndim != 2 or corpus_tokens.is_floating_point():
        raise ValueError("corpus_tokens must be an integer tensor [n_seq, seq_len], e.g. from sparselens.data.load_corpus")
    n_seq, seq_len = corpus_tokens.shape
    if seq_len > model.cfg.n_ctx:
        raise ValueError(f"corpus rows have {seq_len} tokens, more than the model's n_ctx={model.cfg.n_ctx}; "
                         f"load them with load_corpus(n_ctx={model.cfg.n_ctx})")
    if not 1 <= k <= n_seq:
        raise ValueError(f"k must be between 1 and the number of corpus rows ({n_seq}; at most one snippet per row), got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


@torch.no_grad()
def top_activations(
    model: "HookedSparseTransformer",
    nodes: Union[str, Node, Sequence[Union[str, Node]]],
    corpus_tokens: Int[Tensor, "n_seq seq_len"],
    k: int = 10,
    window: Union[int, tuple[int, int]] = (12, 4),
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Snippets]:
    """The ``k`` corpus rows where each node's activation is largest in magnitude, with windows around the peaks.

    Ranking is by ``|activation|``: a node's strongly negative activations are as telling as its
    positive ones (``Snippets.values`` keeps the sign); ties go to the earlier row. Each row counts
    once per node, at its peak token, so two snippets never show the same text. Rows stream through ``model.run_with_cache``
    (caching only the nodes' hook points) ``batch_size`` at a time; a running top-k per node keeps
    each winner's window, so nothing is recomputed, and many nodes share one pass.

    Args:
        nodes: node names such as ``"L0.neuron[17]"`` or Nodes (one, or a sequence).
        corpus_tokens: ``[n_seq, seq_len]`` token ids, e.g. ``load_corpus(n_ctx=model.cfg.n_ctx, split="val")``;
            ``seq_len`` at most ``n_ctx``. Every row is scanned.
        k: snippets per node, at most ``n_seq``.
        window: tokens shown before and after the peak token (an int for both sides).
        batch_size: rows per forward pass.
        progress: show a tqdm progress bar.

    Returns:
        ``{node name: Snippets}`` in the order the nodes were given.

    Raises:
        KeyError / IndexError: an unknown node (the closest valid name is suggested).
        ValueError: corpus rows longer than ``n_ctx``, a bad ``k``, ``window`` or ``batch_size``.
    """
    parsed = [model.node_registry.node(n) for n in ([nodes] if isinstance(nodes, (str, Node)) else nodes)]
    if not parsed:
        raise ValueError("nodes is empty; pass node names such as ['L0.neuron[0]']")
    before, after = (window, window) if isinstance(window, int) else (int(window[0]), int(window[1]))
    _check_corpus(model, corpus_tokens, k, before, after, batch_size)
    n_seq, seq_len = corpus_tokens.shape
    sites = by_site(model, parsed)
    hooks = {site.hook_name for site, _ in sites.values()}
    offsets = torch.arange(before + 1 + after)
    # per site, the running best rows of each of its n nodes: score, value, row, position [k, n]; ids, acts [k, n, W]
    best: dict[str, dict[str, Tensor]] = {}
    label = parsed[0].name if len(parsed) == 1 else f"{len(parsed)} nodes"
    with tqdm(total=n_seq, unit="seq", desc=f"top activations of {label}", disable=not progress) as bar:
        for start in range(0, n_seq, batch_size):
            chunk = corpus_tokens[start : start + batch_size]
            _, cache = model.run_with_cache(chunk.to(model.W_E.device), names_filter=lambda n: n in hooks,
                                            return_type=None)
            ids = F.pad(chunk.cpu(), (before, after), value=-1)  # [b, seq_len + W - 1]
            for name, (site, indices) in sites.items():
                act = site_values(cache.cache_dict, site, indices).cpu().transpose(1, 2)  # [b, n, seq_len]
                score, peak = act.abs().max(dim=2)  # [b, n]
                cols = peak[..., None] + offsets  # [b, n, W] window columns in the padded row
                found = {
                    "score": score, "value": act.gather(2, peak[..., None])[..., 0], "position": peak,
                    "row": (start + torch.arange(act.shape[0]))[:, None].expand_as(peak),
                    "ids": ids[:, None, :].expand(-1, act.shape[1], -1).gather(2, cols),
                    "acts": F.pad(act, (before, after)).gather(2, cols),
                }
                if name in best:
                    found = {key: torch.cat([best[name][key], value]) for key, value in found.items()}
                # stable: equal scores keep row order, so the result does not depend on batch_size
                top = found["score"].sort(dim=0, descending=True, stable=True).indices[:k]  # [k, n]
                best[name] = {key: value.gather(0, top if value.ndim == 2 else top[..., None].expand(-1, -1, value.shape[2]))
                              for key, value in found.items()}
            bar.update(chunk.shape[0])

    out = {}
    for node in parsed:
        found = best[node.site.name]
        j = sites[node.site.name][1].index(node.index)
        valid = found["ids"][:, j] >= 0  # [k, W]
        out[node.name] = Snippets(
            node=node.name, values=found["value"][:, j], rows=found["row"][:, j], positions=found["position"][:, j],
            tokens=[t[v] for t, v in zip(found["ids"][:, j], valid)],
            activations=[a[v] for a, v in zip(found["acts"][:, j], valid)],
            centers=[before - int((~v[:before]).sum()) for v in valid], n_tokens=n_seq * seq_len,
        )
    return out
