"""``top_snippets``: a node's top-activating corpus snippets (:func:`~sparselens.viz.analysis.top_activations`), drawn.

Examples:
    >>> top_snippets(model, "L0.neuron[17]", load_corpus(n_ctx=64, split="val"))  # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Union

from jaxtyping import Int
from torch import Tensor

from sparselens.nodes import Node
from sparselens.viz.analysis import top_activations
from sparselens.viz.plot import STYLE, Mounts, Plot, escape_tokens

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer


def top_snippets(
    model: "HookedSparseTransformer",
    node: Union[str, Node],
    corpus_tokens: Int[Tensor, "n_seq seq_len"],
    k: int = 10,
    window: Union[int, tuple[int, int]] = (12, 4),
    batch_size: int = 16,
    progress: bool = True,
) -> Plot:
    """Top-activating snippets of one node over pretraining tokens, as circuitsvis ``ColoredTokens``.

    The snippets are :func:`~sparselens.viz.analysis.top_activations`'s (largest ``|activation|``,
    at most one per corpus row; see it for the arguments). All snippets share one colour scale; the
    peak token of each is underlined in the caption line. ``plot.data["snippets"]`` is the
    :class:`~sparselens.viz.analysis.Snippets` shown.
    """
    node = model.node_registry.node(node)
    snippets = top_activations(model, [node], corpus_tokens, k, window, batch_size, progress)[node.name]
    lowest = min(float(a.min()) for a in snippets.activations)
    highest = max(float(a.max()) for a in snippets.activations)
    lo, hi = min(lowest, -1e-7), max(highest, 1e-7)  # circuitsvis divides by these
    mount = Mounts()
    parts = []
    for i, (value, row, pos, toks, acts, center) in enumerate(zip(
        snippets.values, snippets.rows, snippets.positions, snippets.tokens, snippets.activations, snippets.centers
    )):
        str_tokens = model.to_str_tokens(toks)
        props = {"tokens": escape_tokens(str_tokens), "values": acts, "minValue": lo, "maxValue": hi, "paddingBottom": 4}
        parts.append(
            f'<div style="margin-top: 6px;"><span style="color: #555;">#{i + 1} &nbsp; {float(value):.4g} at row '
            f'{int(row)}, position {int(pos)} on <u>{html.escape(repr(str_tokens[center]))}</u></span>'
            f'{mount("ColoredTokens", props)}</div>'
        )
    body = (f'<div style="{STYLE}"><div>Top {len(parts)} activations of <b>{html.escape(snippets.node)}</b> by '
            f'|activation|, at most one per row, over {snippets.n_tokens:,} tokens (one colour scale for all, values '
            f'{lowest:.3g} .. {highest:.3g})</div>{"".join(parts)}</div>')
    return Plot(body, mount.items, {"snippets": snippets}, title=f"top snippets of {snippets.node}")
