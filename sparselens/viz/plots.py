"""Inline plots for Jupyter, built on circuitsvis and rendered offline.

Every function returns a :class:`Plot`: an object Jupyter renders through ``_repr_html_``. Its
HTML carries circuitsvis's JavaScript bundle inline (read from the installed circuitsvis package),
never a CDN ``<script src>``, so a saved notebook or a saved ``.html`` file shows the plots with
the network off. (circuitsvis's own ``RenderedHTML`` serves the CDN version whenever it can reach
the internet; we never go through that choice.)

Activations come from one forward pass per model variant: ``model.run_with_cache`` for the full
model and, for a circuit, the same call inside ``model.hooks(fwd_hooks=circuit.hooks(...))``, so a
circuit's activations are what its downstream layers read (ablated nodes show their replacement).

Example:
    >>> from sparselens.viz import attention_patterns, node_activations, top_snippets
    >>> batch = task.batch(n=2, split="test")
    >>> attention_patterns(model, batch, heads=[(0, 1)], circuit=circuit)      # doctest: +SKIP
    >>> node_activations(model, batch, nodes=["L0.neuron[17]"], circuit=circuit)  # doctest: +SKIP
    >>> top_snippets(model, "L0.neuron[17]", load_corpus(n_ctx=64, split="val"))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import html
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import circuitsvis
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from sparselens.interventions.ablation import Ablation
from sparselens.nodes import Node
from sparselens.tasks.base import TaskBatch

if TYPE_CHECKING:
    from transformer_lens import ActivationCache

    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit

TokensLike = Union[str, Int[Tensor, " pos"], Int[Tensor, "batch pos"], TaskBatch]

SINK_TOKEN = "⟨sink⟩"
CIRCUITSVIS_BUNDLE = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"


# ----------------------------------------------------------------------------------- rendering
@functools.lru_cache(maxsize=1)
def circuitsvis_bundle() -> str:
    """circuitsvis's browser bundle (defines the global ``CircuitsVis``), safe to inline in a ``<script>``.

    ``</script`` inside the bundle (it occurs in a string literal) is written ``<\\/script``, which
    JavaScript reads as the same string but which no longer ends the HTML script element.
    """
    if not CIRCUITSVIS_BUNDLE.exists():
        raise FileNotFoundError(
            f"circuitsvis's JavaScript bundle is missing ({CIRCUITSVIS_BUNDLE}); reinstall it with "
            "`pip install --force-reinstall circuitsvis`"
        )
    return CIRCUITSVIS_BUNDLE.read_text(encoding="utf-8").replace("</script", "<\\/script")


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def js_literal(value: Any) -> str:
    """``value`` (tensors, lists, dicts, numbers, strings) as a JavaScript literal that is safe inside
    an HTML ``<script>``: ``<``, ``>`` and ``&`` are ``\\u``-escaped, so token text such as
    ``</script>`` cannot end the script.

    Raises:
        ValueError: the data holds NaN or infinity (JSON has no such numbers).
    """
    try:
        text = json.dumps(_plain(value), allow_nan=False, ensure_ascii=True)
    except ValueError:
        raise ValueError(
            "the plot data holds NaN or infinite values; check the model's weights and the inputs "
            "(run the model and look for torch.isfinite(...) failures)"
        ) from None
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Plot:
    """A self-contained HTML plot that Jupyter renders inline and that works offline.

    Attributes:
        body: the plot's HTML without the script.
        components: ``(div_id, element, props)`` for each circuitsvis React element mounted in ``body``.
        data: the numbers shown, for programmatic use (documented by the function that made the plot).
        title: a one-line description (the plain-text ``repr``).
    """

    def __init__(self, body: str, components: Sequence[tuple[str, str, dict[str, Any]]] = (),
                 data: Optional[dict[str, Any]] = None, title: str = "plot"):
        self.body = body
        self.components = list(components)
        self.data = data if data is not None else {}
        self.title = title

    @property
    def html(self) -> str:
        """The HTML fragment: the body, then (if any circuitsvis element is mounted) one module script
        holding circuitsvis's bundle inline and a ``CircuitsVis.render`` call per element."""
        if not self.components:
            return self.body
        calls = "\n".join(
            f'CircuitsVis.render("{div_id}", CircuitsVis.{element}, {js_literal(props)});'
            for div_id, element, props in self.components
        )
        return f'{self.body}\n<script type="module">\n{circuitsvis_bundle()}\n{calls}\n</script>'

    def _repr_html_(self) -> str:
        return self.html

    def __html__(self) -> str:
        return self.html

    def save(self, path: Union[str, Path]) -> Path:
        """Write a standalone HTML page (opens from ``file://`` with no network)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(self.title)}</title></head>'
            f"<body>\n{self.html}\n</body></html>\n",
            encoding="utf-8",
        )
        return path

    def __repr__(self) -> str:
        return f"<sparselens Plot: {self.title} (rendered in Jupyter; .save('plot.html') for a browser)>"


class _Mounts:
    """Collects circuitsvis elements; calling it returns the ``<div>`` the element renders into."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, element: str, props: dict[str, Any]) -> str:
        div_id = f"sparselens-{uuid.uuid4().hex[:16]}"
        self.items.append((div_id, element, props))
        return f'<div id="{div_id}" class="sparselens-plot"></div>'


_STYLE = "font-family: system-ui, sans-serif; font-size: 13px;"


def _escape_tokens(tokens: Sequence[str]) -> list[str]:
    """circuitsvis's token views insert token text as HTML; escape it so code such as ``a<b`` shows as typed."""
    return [html.escape(t, quote=False) for t in tokens]


# ----------------------------------------------------------------------------------- inputs
def _token_batch(model: "HookedSparseTransformer", tokens: TokensLike) -> tuple[Int[Tensor, "batch pos"], list[int]]:
    """Tokens as ``[batch, pos]`` on the model's device and each row's length to show.

    A TaskBatch's rows are shown up to their ``read_pos`` (inclusive), hiding right padding.
    """
    if isinstance(tokens, TaskBatch):
        return tokens.tokens.to(model.W_E.device), [int(p) + 1 for p in tokens.read_pos]
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
        raise ValueError(
            f"{toks.shape[1]} tokens exceed the model's context n_ctx={model.cfg.n_ctx}; shorten the prompt"
        )
    return toks.to(model.W_E.device), [toks.shape[1]] * toks.shape[0]


def _check_rows(rows: Optional[Sequence[int]], n_rows: int) -> list[int]:
    rows = list(range(n_rows)) if rows is None else [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < n_rows]
    if bad or not rows:
        raise IndexError(f"prompt index {bad[0] if bad else '(none given)'} is out of range: there are {n_rows} prompts (0..{n_rows - 1})")
    return rows


def _caches(
    model: "HookedSparseTransformer", tokens: Int[Tensor, "batch pos"], names: Sequence[str], circuit: Optional["Circuit"]
) -> tuple["ActivationCache", Optional["ActivationCache"]]:
    """Cache ``names`` for the full model and, if given, the circuit (same tokens, same forward pass)."""
    names = list(dict.fromkeys(names))
    with torch.no_grad():
        _, full = model.run_with_cache(tokens, names_filter=names, return_type=None)
        if circuit is None:
            return full, None
        if Ablation.parse(circuit.ablation) is Ablation.RESAMPLE and tokens.shape[0] < 2:
            raise ValueError(
                "this circuit uses resample ablation, which takes each prompt's replacement activations from "
                "the next prompt in the batch; pass several prompts (e.g. a TaskBatch) and pick one with prompt=i"
            )
        with model.hooks(fwd_hooks=circuit.hooks(model, tokens)):
            _, circ = model.run_with_cache(tokens, names_filter=names, return_type=None)
    return full, circ


def _check_heads(model: "HookedSparseTransformer", heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    cfg = model.cfg
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    out = []
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise TypeError(f"heads must be (layer, head) pairs, e.g. [(0, 1)]; got {item!r}") from None
        if not 0 <= layer < cfg.n_layers:
            raise IndexError(f"head ({layer}, {head}): layer {layer} is out of range; the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})")
        if not 0 <= head < cfg.n_heads:
            raise IndexError(f"head ({layer}, {head}): head {head} is out of range; each layer has {cfg.n_heads} heads (0..{cfg.n_heads - 1})")
        out.append((layer, head))
    if not out:
        raise ValueError("heads is empty; pass (layer, head) pairs, e.g. heads=[(0, 1)]")
    return out


def _node_values(cache: "ActivationCache", node: Node) -> Float[Tensor, "batch pos"]:
    act = cache[node.site.hook_name]
    return act.reshape(*act.shape[:2], -1)[..., node.index].float()


# ----------------------------------------------------------------------------------- attention
def attention_patterns(
    model: "HookedSparseTransformer",
    tokens: TokensLike,
    heads: Sequence[tuple[int, int]],
    circuit: Optional["Circuit"] = None,
    prompt: int = 0,
) -> Plot:
    """Attention patterns of chosen heads on one prompt: the full model, and the circuit beside it.

    With an attention sink (``cfg.attn_sink``) the real keys' pattern sums to one minus the sink's
    share, so each pattern gets an extra first key column ``⟨sink⟩`` holding the sink's share
    (``hook_sink``): every query row then sums to 1. The ``⟨sink⟩`` row is not a query and stays 0.

    Args:
        model: the model.
        tokens: text, token ids ``[pos]`` / ``[batch, pos]``, or a TaskBatch (rows end at ``read_pos``).
            The whole batch runs (resample ablation needs the other prompts); ``prompt`` is shown.
        heads: ``(layer, head)`` pairs.
        circuit: a :class:`~sparselens.prune.Circuit` of this model, shown beside the full model.
        prompt: which row of the batch to show.

    Returns:
        A :class:`Plot` of circuitsvis ``AttentionHeads``. ``plot.data`` holds ``tokens`` (labels,
        ``⟨sink⟩`` first if the model has a sink), ``heads``, ``full`` and ``circuit`` (``None``
        without a circuit): patterns ``[n_heads_shown, key_rows, key_rows]`` as displayed.

    Raises:
        IndexError: a layer, head or prompt index out of range.
        ValueError: too many tokens; a circuit of another model; one prompt with resample ablation.
    """
    heads = _check_heads(model, heads)
    toks, lengths = _token_batch(model, tokens)
    (row,) = _check_rows([prompt], toks.shape[0])
    n = lengths[row]
    sink = bool(model.cfg.attn_sink)
    layers = sorted({layer for layer, _ in heads})
    names = [f"blocks.{l}.attn.hook_pattern" for l in layers] + (
        [f"blocks.{l}.attn.hook_sink" for l in layers] if sink else []
    )
    full, circ = _caches(model, toks, names, circuit)

    def shown(cache: "ActivationCache") -> Float[Tensor, "heads keys keys"]:
        pats = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][row, h, :n, :n] for l, h in heads]).float().cpu()
        if not sink:
            return pats
        out = torch.zeros(len(heads), n + 1, n + 1)
        out[:, 1:, 1:] = pats
        out[:, 1:, 0] = torch.stack([cache[f"blocks.{l}.attn.hook_sink"][row, h, :n] for l, h in heads]).float().cpu()
        return out

    str_tokens = ([SINK_TOKEN] if sink else []) + model.to_str_tokens(toks[row, :n])
    head_names = [f"L{l}H{h}" for l, h in heads]
    data = {"tokens": str_tokens, "heads": heads, "full": shown(full), "circuit": shown(circ) if circ is not None else None}

    mount = _Mounts()

    def panel(title: str, note: str, pattern: Tensor) -> str:
        props = {"attention": pattern, "tokens": str_tokens, "attentionHeadNames": head_names,
                 "maxValue": 1.0, "minValue": 0.0, "maskUpperTri": True}
        return (f'<div style="flex: 1 1 420px; min-width: 0;"><h3 style="margin: 4px 0;">{html.escape(title)}</h3>'
                f'<div style="color: #555;">{note}</div>{mount("AttentionHeads", props)}</div>')

    sink_note = (
        f"<b>{SINK_TOKEN}</b> (first key column) is the attention sink's share: attention given to no token. "
        "With it every query row sums to 1. The ⟨sink⟩ row is not a query (left 0)."
        if sink else "This model has no attention sink: each query row sums to 1 over the tokens."
    )
    panels = [panel("Full model", "", data["full"])]
    if circ is not None:
        d_head = model.cfg.d_head
        kept = "; ".join(
            f"L{l}H{h}: " + ", ".join(
                f"{kind} {sum(1 for i in circuit.kept.get(f'L{l}.{kind}', []) if i // d_head == h)}/{d_head}"
                for kind in ("q", "k", "v"))
            for l, h in heads
        )
        panels.append(panel(f"Circuit ({circuit.n_nodes} nodes, {circuit.ablation} ablation)",
                            html.escape(f"channels kept: {kept}"), data["circuit"]))
    body = (f'<div style="{_STYLE}"><div style="margin-bottom: 6px;">Attention of {", ".join(head_names)} on prompt '
            f'{row} ({n} tokens). {sink_note}</div><div style="display: flex; flex-wrap: wrap; gap: 16px;">'
            f'{"".join(panels)}</div></div>')
    return Plot(body, mount.items, data, title=f"attention patterns {', '.join(head_names)}")


# ----------------------------------------------------------------------------------- node activations
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
    toks, lengths = _token_batch(model, tokens_or_batch)
    rows = _check_rows(prompts, toks.shape[0])
    full, circ = _caches(model, toks, [n.site.hook_name for n in parsed], circuit)

    series: list[Tensor] = []  # each [batch, pos]
    labels: list[str] = []
    for node in parsed:
        series.append(_node_values(full, node).cpu())
        labels.append(f"{node.name} full")
        if circ is not None:
            series.append(_node_values(circ, node).cpu())
            kept = node.index in circuit.kept.get(node.site.name, [])
            labels.append(f"{node.name} circuit" + ("" if kept else " (ablated)"))
    per_node = 2 if circ is not None else 1
    pos_bounds, neg_bounds = [], []
    for i in range(0, len(series), per_node):
        shown = torch.cat([s[r, : lengths[r]] for s in series[i : i + per_node] for r in rows])
        pos_bounds += [max(float(shown.max()), 1e-7)] * per_node
        neg_bounds += [min(float(shown.min()), -1e-7)] * per_node

    mount = _Mounts()
    parts, data_tokens, data_values = [], [], []
    batch = tokens_or_batch if isinstance(tokens_or_batch, TaskBatch) else None
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
        props = {"tokens": _escape_tokens(str_tokens), "values": values, "labels": labels,
                 "positiveBounds": pos_bounds, "negativeBounds": neg_bounds}
        parts.append(f'<div style="margin-top: 8px;"><b>{html.escape(heading)}</b>{mount("ColoredTokensMulti", props)}</div>')
    what = "full model and circuit" if circ is not None else "full model"
    body = (f'<div style="{_STYLE}"><div>Activations of {html.escape(", ".join(n.name for n in parsed))} '
            f'({what}); a node\'s series share one colour scale.</div>{"".join(parts)}</div>')
    data = {"labels": labels, "rows": rows, "tokens": data_tokens, "values": data_values}
    return Plot(body, mount.items, data, title=f"node activations {', '.join(n.name for n in parsed)}")


# ----------------------------------------------------------------------------------- top snippets
@dataclass
class Snippets:
    """A node's top activations over a token corpus, each with the tokens around it.

    Attributes:
        node: the node's name.
        values: ``[k]`` the top activations, largest first.
        rows, positions: ``[k]`` where each one is (corpus row, position in the row).
        tokens: per snippet, token ids of the window ``[position - before, position + after]``
            clipped to the row.
        activations: per snippet, the node's activation on each window token (same length as ``tokens``).
        centers: per snippet, the index of the top token within its window.
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


def top_activations(
    model: "HookedSparseTransformer",
    node: Union[str, Node],
    corpus_tokens: Int[Tensor, "n_seq seq_len"],
    k: int = 10,
    window: Union[int, tuple[int, int]] = (12, 4),
    batch_size: int = 16,
    progress: bool = True,
) -> Snippets:
    """The ``k`` largest activations of ``node`` over every token of ``corpus_tokens``.

    Rows stream through ``model.run_with_cache`` (caching only the node's hook) ``batch_size`` at a
    time; a running top-k keeps each winner's window of activations, so nothing is recomputed.

    Args:
        model: the model.
        node: a node name such as ``"L0.neuron[17]"`` or a Node.
        corpus_tokens: ``[n_seq, seq_len]`` token ids, e.g. ``load_corpus(n_ctx=model.cfg.n_ctx, split="val")``;
            ``seq_len`` at most ``n_ctx``.
        k: how many snippets.
        window: tokens shown before and after the top token (an int for both sides).
        batch_size: rows per forward pass.
        progress: show a tqdm progress bar.

    Raises:
        KeyError: unknown node name (the closest valid one is suggested).
        ValueError: corpus rows longer than ``n_ctx``, a bad ``k``, ``window`` or ``batch_size``.
    """
    node = model.node_registry.node(node)
    before, after = (window, window) if isinstance(window, int) else (int(window[0]), int(window[1]))
    if before < 0 or after < 0:
        raise ValueError(f"window must be non-negative (tokens before, after), got {window!r}")
    if not isinstance(corpus_tokens, Tensor) or corpus_tokens.ndim != 2 or corpus_tokens.is_floating_point():
        raise ValueError("corpus_tokens must be an integer tensor [n_seq, seq_len], e.g. from sparselens.data.load_corpus")
    n_seq, seq_len = corpus_tokens.shape
    if seq_len > model.cfg.n_ctx:
        raise ValueError(
            f"corpus rows have {seq_len} tokens, more than the model's n_ctx={model.cfg.n_ctx}; "
            f"load them with load_corpus(n_ctx={model.cfg.n_ctx})"
        )
    if not 1 <= k <= n_seq * seq_len:
        raise ValueError(f"k must be between 1 and the number of corpus tokens ({n_seq * seq_len}), got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    width = before + 1 + after
    offsets = torch.arange(width)
    best_vals = torch.empty(0)
    best_rows = torch.empty(0, dtype=torch.long)
    best_pos = torch.empty(0, dtype=torch.long)
    best_acts = torch.empty(0, width)
    best_toks = torch.empty(0, width, dtype=torch.long)
    hook = node.site.hook_name
    with tqdm(total=n_seq, unit="seq", desc=f"top activations of {node.name}", disable=not progress) as bar:
        for start in range(0, n_seq, batch_size):
            chunk = corpus_tokens[start : start + batch_size]
            with torch.no_grad():
                _, cache = model.run_with_cache(chunk.to(model.W_E.device), names_filter=[hook], return_type=None)
            acts = _node_values(cache, node).cpu()  # [b, seq_len]
            vals, flat = acts.flatten().topk(min(k, acts.numel()))
            r, p = flat // seq_len, flat % seq_len
            cols = p[:, None] + offsets  # window columns in the padded row
            win_acts = F.pad(acts, (before, after), value=float("nan"))[r[:, None], cols]
            win_toks = F.pad(chunk.cpu(), (before, after), value=-1)[r[:, None], cols]
            best_vals = torch.cat([best_vals, vals])
            best_rows = torch.cat([best_rows, r + start])
            best_pos = torch.cat([best_pos, p])
            best_acts = torch.cat([best_acts, win_acts])
            best_toks = torch.cat([best_toks, win_toks])
            keep = best_vals.topk(min(k, best_vals.numel())).indices
            best_vals, best_rows, best_pos = best_vals[keep], best_rows[keep], best_pos[keep]
            best_acts, best_toks = best_acts[keep], best_toks[keep]
            bar.update(chunk.shape[0])

    valid = best_toks >= 0
    return Snippets(
        node=node.name,
        values=best_vals,
        rows=best_rows,
        positions=best_pos,
        tokens=[t[v] for t, v in zip(best_toks, valid)],
        activations=[a[v] for a, v in zip(best_acts, valid)],
        centers=[before - int((~v[:before]).sum()) for v in valid],
        n_tokens=n_seq * seq_len,
    )


def top_snippets(
    model: "HookedSparseTransformer",
    node: Union[str, Node],
    corpus_tokens: Int[Tensor, "n_seq seq_len"],
    k: int = 10,
    window: Union[int, tuple[int, int]] = (12, 4),
    batch_size: int = 16,
    progress: bool = True,
) -> Plot:
    """Top-activating snippets of a node over pretraining tokens, as circuitsvis ``ColoredTokens``.

    See :func:`top_activations` for the arguments. All snippets share one colour scale; the top
    token of each is underlined in the caption line. ``plot.data["snippets"]`` is the
    :class:`Snippets` shown.
    """
    snippets = top_activations(model, node, corpus_tokens, k, window, batch_size, progress)
    lowest = min(float(a.min()) for a in snippets.activations)
    highest = max(float(a.max()) for a in snippets.activations)
    lo, hi = min(lowest, -1e-7), max(highest, 1e-7)  # circuitsvis divides by these
    mount = _Mounts()
    parts = []
    for i, (value, row, pos, toks, acts, center) in enumerate(zip(
        snippets.values, snippets.rows, snippets.positions, snippets.tokens, snippets.activations, snippets.centers
    )):
        str_tokens = model.to_str_tokens(toks)
        props = {"tokens": _escape_tokens(str_tokens), "values": acts, "minValue": lo, "maxValue": hi, "paddingBottom": 4}
        parts.append(
            f'<div style="margin-top: 6px;"><span style="color: #555;">#{i + 1} &nbsp; {float(value):.4g} at row '
            f'{int(row)}, position {int(pos)} on <u>{html.escape(repr(str_tokens[center]))}</u></span>'
            f'{mount("ColoredTokens", props)}</div>'
        )
    body = (f'<div style="{_STYLE}"><div>Top {len(parts)} activations of <b>{html.escape(snippets.node)}</b> '
            f'over {snippets.n_tokens:,} tokens (one colour scale for all, values {lowest:.3g} .. {highest:.3g})</div>{"".join(parts)}</div>')
    return Plot(body, mount.items, {"snippets": snippets}, title=f"top snippets of {snippets.node}")


# ----------------------------------------------------------------------------------- circuit size
def _sweep_points(results: Sequence[Any], loss: str) -> list[dict[str, Any]]:
    if isinstance(results, (Mapping, str)) or not isinstance(results, Sequence) or not results:
        raise ValueError("results must be a non-empty list of Circuit objects or dicts with n_nodes, n_edges, losses")
    points = []
    for i, item in enumerate(results):
        if isinstance(item, Mapping):
            missing = [key for key in ("n_nodes", "n_edges", "losses") if key not in item]
            if missing:
                raise ValueError(f"results[{i}] has no {missing[0]!r}; each dict needs n_nodes, n_edges and losses")
            n_nodes, n_edges, losses = item["n_nodes"], item["n_edges"], item["losses"]
        elif all(hasattr(item, key) for key in ("n_nodes", "n_edges", "losses")):
            n_nodes, n_edges, losses = item.n_nodes, item.n_edges, item.losses
        else:
            raise TypeError(f"results[{i}] is a {type(item).__name__}; pass Circuit objects or dicts with n_nodes, n_edges, losses")
        if isinstance(losses, Mapping):
            if loss not in losses:
                raise KeyError(f"results[{i}].losses has no {loss!r}; it has {sorted(losses)} (choose with loss=...)")
            value = losses[loss]
            refs = {key: float(losses[key]) for key in ("model", "target") if key in losses}
        else:
            value, refs = losses, {}
        value = float(value)
        if not math.isfinite(value) or not all(math.isfinite(float(x)) for x in (n_nodes, n_edges)):
            raise ValueError(f"results[{i}] has a non-finite loss or size ({n_nodes=}, {n_edges=}, loss={value})")
        points.append({"n_nodes": int(n_nodes), "n_edges": int(n_edges), "loss": value, "refs": refs})
    return points


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / n if span > 0 else 1.0
    exp = 10 ** math.floor(math.log10(raw))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw)


def _axis(lo: float, hi: float, log: bool) -> tuple[float, float, list[float]]:
    """Domain (in plotted units: log10 when ``log``) and tick values (in data units)."""
    if log:
        if hi <= lo:
            lo, hi = lo / 2, hi * 2
        ticks = [m * 10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in (1, 2, 5) if lo <= m * 10.0**e <= hi]
        if len(ticks) > 7:
            ticks = [t for t in ticks if f"{t:g}".lstrip("-")[0] == "1"]
        if len(ticks) < 2:
            ticks = sorted(set(ticks) | {lo, hi})
        return math.log10(lo), math.log10(hi), ticks
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    step = _nice_step(hi - lo)
    start = math.floor(lo / step) * step
    ticks = [start + i * step for i in range(int(math.ceil((hi - start) / step)) + 1)]
    return ticks[0], ticks[-1], ticks


def _panel_svg(points: list[dict[str, Any]], key: str, xlabel: str, y_lo: float, y_hi: float, y_ticks: list[float],
               refs: dict[str, float]) -> str:
    w, h, left, right, top, bottom = 380, 270, 56, 14, 14, 42
    xs = [p[key] for p in points]
    log = min(xs) > 0
    x_lo, x_hi, x_ticks = _axis(min(xs), max(xs), log)
    pad = 0.04 * (x_hi - x_lo)  # keep the end points off the frame
    x_lo, x_hi = x_lo - pad, x_hi + pad

    def px(v: float) -> float:
        v = math.log10(v) if log else v
        return left + (v - x_lo) / ((x_hi - x_lo) or 1) * (w - left - right)

    def py(v: float) -> float:
        return top + (y_hi - v) / ((y_hi - y_lo) or 1) * (h - top - bottom)

    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="system-ui, sans-serif" font-size="11" data-axis="{key}">']
    out.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" stroke="#999"/>')
    for t in x_ticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{h - bottom}" x2="{x:.1f}" y2="{h - bottom + 4}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{h - bottom + 15}" text-anchor="middle">{t:g}</text>')
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#999"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 6}" text-anchor="middle">{xlabel}{" (log scale)" if log else ""}</text>'
               f'<text transform="translate(14 {(top + h - bottom) / 2}) rotate(-90)" text-anchor="middle">task loss</text>')
    for name, value, dash, colour in (("model", refs.get("model"), "6 4", "#2a7"), ("target", refs.get("target"), "2 3", "#c33")):
        if value is not None:
            y = py(value)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="{colour}" stroke-dasharray="{dash}"/>'
                       f'<text x="{w - right - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{colour}">{name} {value:.3g}</text>')
    ordered = sorted(points, key=lambda p: p[key])
    out.append('<polyline fill="none" stroke="#36c" stroke-width="1.5" points="'
               + " ".join(f"{px(p[key]):.1f},{py(p['loss']):.1f}" for p in ordered) + '"/>')
    for p in points:
        out.append(f'<circle cx="{px(p[key]):.1f}" cy="{py(p["loss"]):.1f}" r="4" fill="#36c" '
                   f'data-n-nodes="{p["n_nodes"]}" data-n-edges="{p["n_edges"]}" data-loss="{p["loss"]!r}">'
                   f'<title>{p["n_nodes"]} nodes, {p["n_edges"]} edges: loss {p["loss"]:.4g}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def circuit_size_plot(results: Sequence[Union["Circuit", Mapping[str, Any]]], loss: str = "circuit") -> Plot:
    """Task loss against circuit size (nodes, and edges) for a sweep, as inline SVG (no JavaScript).

    Args:
        results: Circuit objects, or dicts with ``n_nodes``, ``n_edges`` and ``losses`` (a dict of
            named losses, or one number).
        loss: which entry of ``losses`` to plot (a Circuit's are ``model``, ``circuit``,
            ``circuit_val``, ``empty``, ``target``). The ``model`` and ``target`` losses of the
            first result that has them are drawn as dashed reference lines.

    Returns:
        A :class:`Plot`; ``plot.data`` holds ``n_nodes``, ``n_edges`` and ``loss`` lists in input order.
        Sizes above zero use a log x axis.

    Raises:
        ValueError / TypeError / KeyError: an empty list, an entry without sizes or losses, a missing
        loss name, or a non-finite value.
    """
    points = _sweep_points(results, loss)
    refs = next((p["refs"] for p in points if p["refs"]), {})
    ys = [p["loss"] for p in points] + list(refs.values())
    y_lo, y_hi, y_ticks = _axis(min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0, log=False)
    panels = [_panel_svg(points, key, label, y_lo, y_hi, y_ticks, refs)
              for key, label in (("n_nodes", "nodes in circuit"), ("n_edges", "edges in circuit"))]
    body = (f'<div style="{_STYLE}"><div>Loss ({html.escape(loss)}) against circuit size, {len(points)} circuits</div>'
            f'<div style="display: flex; flex-wrap: wrap; gap: 12px;">{"".join(panels)}</div></div>')
    data = {key: [p[key] for p in points] for key in ("n_nodes", "n_edges", "loss")}
    return Plot(body, data=data, title=f"loss ({loss}) against circuit size")
