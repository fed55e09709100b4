"""``node_activations``: nodes' activations over the tokens of prompts, in the full model and in the circuit.

Examples:
    >>> node_activations(model, task.batch(n=2, split="test"), nodes=["L0.neuron[17]"], circuit=circuit)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from torch import Tensor

from sparselens.nodes import Node
from sparselens.tasks.base import TaskBatch
from sparselens.viz.analysis import TokensLike, as_prompts, check_rows, model_and_circuit, node_values
from sparselens.viz.plot import STYLE, Mounts, Plot, escape_tokens

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit


def node_activations(
    model: "HookedSparseTransformer",
    tokens_or_batch: TokensLike,
    nodes: Sequence[Union[str, Node]],
    circuit: Optional["Circuit"] = None,
    prompts: Optional[Sequence[int]] = None,
) -> Plot:
    """Nodes' activations over the tokens of prompts, in the full model and in the circuit.

    One circuitsvis ``ColoredTokensMulti`` per prompt: pick a series (a node in the full model or in
    the circuit) to colour the tokens; hover a token for every series' value. A node's full and
    circuit series share one colour scale (over all prompts shown), so a node that the circuit
    repurposes or silences is visible at a glance. In the circuit a node outside it shows its
    replacement value (zero, mean or resampled), labelled "(ablated)".

    Args:
        model: the model.
        tokens_or_batch: text, token ids ``[pos]`` / ``[batch, pos]``, or a TaskBatch (rows end at ``read_pos``).
        nodes: node names such as ``"L0.neuron[17]"`` or ``"L1.q[h2,5]"``, or Node objects.
        circuit: a circuit of this model.
        prompts: rows to show (default all).

    Returns:
        A :class:`Plot`. ``plot.data``: ``labels`` (the K series), ``rows``, ``tokens`` (per row, the
        shown tokens) and ``values`` (per row, ``[pos_shown, K]``, exactly the cached activations).

    Raises:
        KeyError: an unknown node name (the message names the closest valid one).
        IndexError: a node or prompt index out of range.
    """
    registry = model.node_registry
    if isinstance(nodes, (str, Node)):
        nodes = [nodes]
    parsed = [registry.node(n) for n in nodes]
    if not parsed:
        raise ValueError("nodes is empty; pass node names such as ['L0.neuron[0]']")
    shown_prompts = as_prompts(model, tokens_or_batch)
    toks, lengths = shown_prompts.tokens, shown_prompts.lengths
    rows = check_rows(prompts, toks.shape[0])
    runs = model_and_circuit(model, shown_prompts.batch, circuit, {n.site.hook_name for n in parsed})

    series: list[Tensor] = []  # each [batch, pos]
    labels: list[str] = []
    for node in parsed:
        series.append(node_values(runs.full, node).cpu())
        labels.append(f"{node.name} full")
        if runs.circuit is not None:
            assert circuit is not None  # runs.circuit is the run of the circuit given
            series.append(node_values(runs.circuit, node).cpu())
            kept = node.index in circuit.kept.get(node.site.name, [])
            labels.append(f"{node.name} circuit" + ("" if kept else " (ablated)"))
    per_node = 2 if runs.circuit is not None else 1
    pos_bounds, neg_bounds = [], []
    for i in range(0, len(series), per_node):
        shown = torch.cat([s[r, : lengths[r]] for s in series[i : i + per_node] for r in rows])
        pos_bounds += [max(float(shown.max()), 1e-7)] * per_node
        neg_bounds += [min(float(shown.min()), -1e-7)] * per_node

    mount = Mounts()
    parts, data_tokens, data_values = [], [], []
    batch = shown_prompts.batch if isinstance(shown_prompts.batch, TaskBatch) else None
    for r in rows:
        n = lengths[r]
        str_tokens = model.to_str_tokens(toks[r, :n])
        values = torch.stack([s[r, :n] for s in series], dim=1)
        data_tokens.append(str_tokens)
        data_values.append(values)
        heading = f"prompt {r}"
        if batch is not None:
            pair, side = r % batch.n_pairs, "A" if r < batch.n_pairs else "B"
            heading += (f" (pair {pair} {side}; next token {model.to_str_tokens(batch.correct[r : r + 1])[0]!r}, "
                        f"not {model.to_str_tokens(batch.wrong[r : r + 1])[0]!r})")
        props = {"tokens": escape_tokens(str_tokens), "values": values, "labels": labels,
                 "positiveBounds": pos_bounds, "negativeBounds": neg_bounds}
        parts.append(f'<div style="margin-top: 8px;"><b>{html.escape(heading)}</b>{mount("ColoredTokensMulti", props)}</div>')
    what = "full model and circuit" if runs.circuit is not None else "full model"
    body = (f'<div style="{STYLE}"><div>Activations of {html.escape(", ".join(n.name for n in parsed))} '
            f'({what}); a node\'s series share one colour scale.</div>{"".join(parts)}</div>')
    data = {"labels": labels, "rows": rows, "tokens": data_tokens, "values": data_values}
    return Plot(body, mount.items, data, title=f"node activations {', '.join(n.name for n in parsed)}")
