"""The offline interactive circuit viewer: one self-contained HTML page per circuit.

:func:`viewer_data` gathers everything the page shows, using only the model's own forward pass
(``run_with_cache``, with the circuit's ablation hooks attached for the circuit's activations).
:func:`render_html` inlines that data with the viewer's JavaScript and CSS, which ship inside the
package (``sparselens/viz/static``), so the page needs no network and opens from ``file://``.
:func:`write_viewer` writes the page; :class:`CircuitView` shows it inline in Jupyter.

Example:
    >>> circuit = prune(model, task, target_loss=0.15, ablation="mean", means=means)  # doctest: +SKIP
    >>> write_viewer(model, circuit, "circuit.html")                                  # doctest: +SKIP
    >>> circuit.show(model)          # in Jupyter: the same page inline                # doctest: +SKIP
"""

from __future__ import annotations

import html
import itertools
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sparselens.nodes import Node, NodeKind, NodeSite

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit
    from sparselens.tasks.base import Task

STATIC_DIR = Path(__file__).parent / "static"
DATA_SCHEMA = "sparselens.viewer"
DATA_VERSION = 1
#: tokens shown before and after the peak token of a top-activating snippet
SNIPPET_BEFORE, SNIPPET_AFTER = 10, 4


def _round(values: Tensor, digits: int = 4) -> list:
    """Nested lists of floats at ``digits`` significant digits (keeps the page small)."""
    return json.loads(json.dumps(values.tolist()), parse_float=lambda s: float(f"{float(s):.{digits}g}"))


def _site_activations(cache: Any, site: NodeSite, indices: list[int]) -> Float[Tensor, "batch pos n"]:
    """The activations of ``site``'s channels ``indices`` (flat, head-major for Q/K/V) from a cache."""
    return cache[site.hook_name].flatten(2)[..., indices].float()


def _kept_by_site(model: "HookedSparseTransformer", nodes: list[Node]) -> dict[str, tuple[NodeSite, list[int]]]:
    """Kept flat channel indices per site name, in forward order."""
    by_site: dict[str, tuple[NodeSite, list[int]]] = {}
    for node in nodes:
        by_site.setdefault(node.site.name, (model.node_registry.site(node.site.name), []))[1].append(node.index)
    return by_site


def _resolve_task(model: "HookedSparseTransformer", circuit: "Circuit", task: Union["Task", str, None]) -> "Task":
    from sparselens.tasks import get_task

    if task is None:
        task = circuit.task
    if isinstance(task, str):
        return get_task(task, tokenizer=model.tokenizer)
    return task


def _correlation(a: Float[Tensor, " n"], b: Float[Tensor, " n"]) -> Optional[float]:
    """Pearson correlation of two flat tensors, or None when either is constant (up to float noise)."""
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    a, b = a - a.mean(), b - b.mean()
    if scale == 0 or float(a.abs().max()) <= 1e-5 * scale or float(b.abs().max()) <= 1e-5 * scale:
        return None
    return round(float((a * b).sum() / (a.norm() * b.norm())), 4)


@torch.no_grad()
def _prompt_activations(
    model: "HookedSparseTransformer", circuit: "Circuit", task: "Task", nodes: list[Node], n_prompts: int, seed: int
) -> tuple[list[dict], dict[str, dict], set[int]]:
    """Task prompts, and each node's activations on them in the full model and in the circuit.

    Returns:
        prompts: one record per prompt row (token ids up to the read position, targets, logit diffs).
        acts: ``{node name: {"full": [prompt][token], "circuit": [prompt][token], "max_abs", "corr"}}``.
        token ids used (for the page's vocabulary).
    """
    batch = task.batch(n=max(1, n_prompts // 2), split=circuit.loss_split, seed=seed).to(model.W_E.device)
    tokens = batch.tokens
    by_site = _kept_by_site(model, nodes)
    hook_names = {site.hook_name for site, _ in by_site.values()}
    names_filter = lambda name: name in hook_names  # noqa: E731
    full_logits, full_cache = model.run_with_cache(tokens, names_filter=names_filter)
    with model.hooks(fwd_hooks=circuit.hooks(model, tokens)):
        circuit_logits, circuit_cache = model.run_with_cache(tokens, names_filter=names_filter)

    rows = torch.arange(tokens.shape[0], device=tokens.device)
    lengths = (batch.read_pos + 1).tolist()

    def logit_diff(logits: Float[Tensor, "row pos vocab"]) -> list[float]:
        at_read = logits[rows, batch.read_pos]  # [row, vocab]
        return _round(at_read[rows, batch.correct] - at_read[rows, batch.wrong])

    diff_full, diff_circuit = logit_diff(full_logits), logit_diff(circuit_logits)
    prompts, used = [], set()
    n_pairs = batch.n_pairs
    for r in range(tokens.shape[0]):
        ids = tokens[r, : lengths[r]].tolist()
        used.update(ids)
        used.update((int(batch.correct[r]), int(batch.wrong[r])))
        prompts.append({
            "pair": r % n_pairs, "label": "A" if r < n_pairs else "B", "ids": ids,
            "correct": int(batch.correct[r]), "wrong": int(batch.wrong[r]),
            "logit_diff": {"full": diff_full[r], "circuit": diff_circuit[r]},
        })

    acts: dict[str, dict] = {}
    for site, indices in by_site.values():
        full = _site_activations(full_cache, site, indices)  # [row, pos, n]
        circ = _site_activations(circuit_cache, site, indices)
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] <= batch.read_pos[:, None]  # [row, pos]
        for j, index in enumerate(indices):
            f, c = full[..., j], circ[..., j]  # [row, pos]
            f_list, c_list = _round(f), _round(c)
            acts[site.node(index).name] = {
                "full": [f_list[r][: lengths[r]] for r in range(len(lengths))],
                "circuit": [c_list[r][: lengths[r]] for r in range(len(lengths))],
                "max_abs": float(f"{float(torch.maximum(f[valid].abs().max(), c[valid].abs().max())):.4g}"),
                "corr": _correlation(f[valid], c[valid]),
            }
    return prompts, acts, used


@torch.no_grad()
def circuit_snippets(
    model: "HookedSparseTransformer",
    nodes: list[Node],
    corpus_tokens: Int[Tensor, "n_seq n_ctx"],
    n_snippets: int = 5,
    corpus_rows: int = 64,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Top-activating windows of the pretraining corpus for many nodes in one stream (largest ``|activation|``).

    ``corpus_rows`` rows (shuffled with :func:`sparselens.data.iter_batches`) are streamed through
    ``run_with_cache`` in batches of ``batch_size``, caching only the nodes' hook points, and a
    running top ``n_snippets`` (at most one per row) is kept per node.

    Args:
        model: the model.
        nodes: the nodes to find snippets for.
        corpus_tokens: ``[n_seq, n_ctx]`` pretraining rows, e.g. from :func:`sparselens.data.load_corpus`.
        n_snippets: snippets per node.
        corpus_rows: rows of the corpus to scan.
        batch_size: rows per forward pass.
        seed: shuffling seed.

    Returns:
        ``{node name: [{"ids": [W], "acts": [W], "peak": int, "value": float}, ...]}``, best first,
        each window ``SNIPPET_BEFORE`` tokens before the peak token to ``SNIPPET_AFTER`` after it.
    """
    from sparselens.data import iter_batches

    corpus_tokens = corpus_tokens[:, : model.cfg.n_ctx]
    n_seq = corpus_tokens.shape[0]
    batch_size = min(batch_size, n_seq)
    n_batches = max(1, math.ceil(min(corpus_rows, n_seq) / batch_size))
    by_site = _kept_by_site(model, nodes)
    hook_names = {site.hook_name for site, _ in by_site.values()}
    width = SNIPPET_BEFORE + 1 + SNIPPET_AFTER
    offsets = torch.arange(width)
    # per site: running best scores [k, n], windows of token ids [k, n, W] and activations [k, n, W]
    best: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    for rows in itertools.islice(iter_batches(corpus_tokens, batch_size, seed=seed), n_batches):
        rows = rows.to(model.W_E.device)
        _, cache = model.run_with_cache(rows, names_filter=lambda name: name in hook_names, return_type=None)
        padded_ids = torch.nn.functional.pad(rows.cpu(), (SNIPPET_BEFORE, SNIPPET_AFTER), value=-1)  # [b, pos+W-1]
        for name, (site, indices) in by_site.items():
            act = _site_activations(cache, site, indices).cpu()  # [b, pos, n]
            score, peak = act.abs().max(dim=1)  # [b, n]
            starts = peak[..., None] + offsets  # [b, n, W] positions in the padded row
            ids = padded_ids.gather(1, starts.flatten(1)).view_as(starts)
            padded_act = torch.nn.functional.pad(act.transpose(1, 2), (SNIPPET_BEFORE, SNIPPET_AFTER))  # [b, n, pos+W-1]
            window_act = padded_act.gather(2, starts)
            if name in best:
                old_score, old_ids, old_act = best[name]
                score = torch.cat([old_score, score])
                ids, window_act = torch.cat([old_ids, ids]), torch.cat([old_act, window_act])
            k = min(n_snippets, score.shape[0])
            top = score.topk(k, dim=0).indices  # [k, n]
            best[name] = (score.gather(0, top), ids.gather(0, top[..., None].expand(-1, -1, width)),
                          window_act.gather(0, top[..., None].expand(-1, -1, width)))
    out: dict[str, list[dict]] = {}
    for name, (site, indices) in by_site.items():
        score, ids, act = best[name]
        for j, index in enumerate(indices):
            snippets = []
            for s in range(score.shape[0]):
                keep = ids[s, j] >= 0
                snippet_ids, snippet_act = ids[s, j][keep].tolist(), _round(act[s, j][keep])
                peak = SNIPPET_BEFORE - int((~keep[:SNIPPET_BEFORE]).sum())
                snippets.append({"ids": snippet_ids, "acts": snippet_act, "peak": peak, "value": snippet_act[peak]})
            out[site.node(index).name] = snippets
    return out


def _layout_rows(model: "HookedSparseTransformer", nodes: list[Node]) -> list[dict]:
    """The page's rows, top to bottom in forward order: per layer the attention read, Q/K/V grouped
    by head, the attention write, the MLP read, the neurons and the MLP write (empty rows omitted)."""
    by_site = _kept_by_site(model, nodes)

    def names(layer: int, kind: NodeKind) -> list[str]:
        site, indices = by_site.get(f"L{layer}.{kind.value}", (None, []))
        return [site.node(i).name for i in indices] if site else []

    rows = []
    for layer in range(model.cfg.n_layers):
        heads: dict[int, list[str]] = {}
        for kind in (NodeKind.Q, NodeKind.K, NodeKind.V):
            for name in names(layer, kind):
                heads.setdefault(model.node_registry.node(name).head, []).append(name)
        for kind, label in ((NodeKind.ATTN_IN, "attention read"), ("qkv", "Q/K/V by head"),
                            (NodeKind.ATTN_OUT, "attention write"), (NodeKind.MLP_IN, "MLP read"),
                            (NodeKind.NEURON, "neurons"), (NodeKind.MLP_OUT, "MLP write")):
            if kind == "qkv":
                groups = [{"label": f"head {h}", "nodes": heads[h]} for h in sorted(heads)]
            else:
                groups = [{"label": "", "nodes": names(layer, kind)}] if names(layer, kind) else []
            if groups:
                kind_name = getattr(kind, "value", kind)
                rows.append({"layer": layer, "kind": kind_name, "label": f"L{layer} {label}", "groups": groups})
    return rows


def viewer_data(
    model: "HookedSparseTransformer",
    circuit: "Circuit",
    task: Union["Task", str, None] = None,
    n_prompts: int = 8,
    corpus_tokens: Optional[Int[Tensor, "n_seq n_ctx"]] = None,
    n_snippets: int = 5,
    *,
    corpus_rows: int = 64,
    selected: Optional[str] = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the viewer page shows, as a JSON-ready dict.

    Args:
        model: the model the circuit was pruned from (checked by fingerprint).
        circuit: the circuit.
        task: the task (object or name) whose prompts are shown; default the circuit's own task.
        n_prompts: task prompts shown per node (whole A/B pairs: ``max(1, n_prompts // 2)`` pairs).
        corpus_tokens: ``[n_seq, n_ctx]`` pretraining rows for top-activating snippets; None: none.
        n_snippets: snippets per node.
        corpus_rows: corpus rows scanned for snippets (see :func:`circuit_snippets`).
        selected: a circuit node whose panel is open when the page loads.
        seed: seed of the task prompts and of the corpus sample.

    Returns:
        ``header`` (task, losses, node/edge counts, edge counts by kind, ablation, norm freezing,
        model shape), ``rows`` (layer-by-layer layout, Q/K/V grouped by head), ``nodes`` (per node:
        site, kind, role, head, channel, activations on each prompt in the full model and in the
        circuit ``[prompt][token]``, their correlation, snippets, incoming/outgoing edge indices),
        ``edges`` (``kind``, ``src``, ``dst``, ``weight`` as :meth:`Circuit.edges` gives them),
        ``prompts``, ``targets`` (unembedding ends) and ``vocab`` (id -> token string).

    Raises:
        ValueError: the circuit belongs to a different model, or ``selected`` is not in the circuit.
        UnknownNameError, IndexError: ``selected`` is not a node of this model.
    """
    mask = circuit.node_mask(model)  # checks the fingerprint first
    nodes = mask.nodes()
    names = [n.name for n in nodes]
    if selected is not None:
        selected = model.node_registry.node(selected).name
        if selected not in names:
            raise ValueError(f"node {selected!r} is not in this circuit; its {len(names)} nodes include {names[:4]}")
    task = _resolve_task(model, circuit, task)
    edges = circuit.edges(model)
    prompts, acts, used = _prompt_activations(model, circuit, task, nodes, n_prompts, seed)
    snippets = circuit_snippets(model, nodes, corpus_tokens, n_snippets, corpus_rows, seed=seed) if (
        corpus_tokens is not None and n_snippets > 0) else {}
    for found in snippets.values():
        for s in found:
            used.update(s["ids"])
    used.update(circuit.target_ids)

    records: dict[str, dict] = {}
    for node in nodes:
        records[node.name] = {
            "name": node.name, "site": node.site.name, "hook": node.site.hook_name, "layer": node.site.layer,
            "kind": node.site.kind.value, "role": node.site.kind.role, "head": node.head,
            "channel": node.index % node.site.channel_shape[-1], "index": node.index,
            "act": acts[node.name], "snippets": snippets.get(node.name, []), "in": [], "out": [],
        }
    edge_records = []
    for i, e in enumerate(edges):
        edge_records.append({"kind": e.kind, "src": e.src, "dst": e.dst, "weight": float(f"{e.weight:.4g}")})
        if e.src in records:
            records[e.src]["out"].append(i)
        if e.dst in records:
            records[e.dst]["in"].append(i)

    vocab_ids = sorted(used)
    strings = model.to_str_tokens(torch.tensor(vocab_ids, dtype=torch.long)) if vocab_ids else []
    cfg = model.cfg
    header = {
        "task": circuit.task, "prompts_task": getattr(task, "name", circuit.task), "losses": dict(circuit.losses),
        "loss_split": circuit.loss_split, "n_nodes": circuit.n_nodes, "n_edges": circuit.n_edges,
        "edge_counts": dict(circuit.edge_counts), "ablation": circuit.ablation, "freeze_norms": circuit.freeze_norms,
        "seed": circuit.seed, "model_fingerprint": circuit.model_fingerprint, "model_nodes": model.node_registry.n_nodes,
        "model": {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_head": cfg.d_head,
                  "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab},
        "snippets": bool(snippets),
    }
    return {
        "schema": DATA_SCHEMA, "version": DATA_VERSION, "header": header, "rows": _layout_rows(model, nodes),
        "nodes": records, "edges": edge_records, "prompts": prompts,
        "targets": [{"id": t, "name": f"unembed:{t}"} for t in circuit.target_ids],
        "vocab": {str(i): s for i, s in zip(vocab_ids, strings, strict=True)}, "selected": selected,
    }


def _static(name: str) -> str:
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise RuntimeError(f"{name} contains a closing script/style tag and cannot be inlined")
    return text


def render_html(data: dict[str, Any], title: Optional[str] = None) -> str:
    """The self-contained viewer page for :func:`viewer_data`'s output (JS, CSS and data inlined)."""
    header = data["header"]
    title = title or f"sparselens circuit: {header['task']} ({header['n_nodes']} nodes, {header['n_edges']} edges)"
    # "<" escaped inside JSON strings keeps "</script>" (or "<!--") in a token from ending the block
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_static('viewer.css')}\n</style>\n</head>\n<body>\n"
        "<div id=\"app\"><noscript>The circuit viewer needs JavaScript.</noscript></div>\n"
        f"<script type=\"application/json\" id=\"sparselens-data\">{payload}</script>\n"
        f"<script>\n{_static('viewer.js')}\n</script>\n</body>\n</html>\n"
    )


class CircuitView:
    """A rendered circuit viewer: ``_repr_html_`` shows it inline in Jupyter (an ``iframe`` whose
    ``srcdoc`` is the whole page, so it works offline and in saved notebooks); :meth:`save` writes it.

    Attributes:
        data: :func:`viewer_data`'s output.
        html: the self-contained page.
        height: height of the inline frame in pixels.
    """

    def __init__(self, data: dict[str, Any], height: int = 760):
        self.data = data
        self.html = render_html(data)
        self.height = height

    def _repr_html_(self) -> str:
        return (f"<iframe srcdoc=\"{html.escape(self.html, quote=True)}\" title=\"sparselens circuit viewer\" "
                f"style=\"width:100%;height:{self.height}px;border:1px solid #ddd\"></iframe>")

    def save(self, path: Union[str, Path]) -> Path:
        """Write the page to ``path`` (parents created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path

    def __repr__(self) -> str:
        h = self.data["header"]
        return f"CircuitView({h['task']!r}: {h['n_nodes']} nodes, {h['n_edges']} edges)"


def write_viewer(
    model: "HookedSparseTransformer", circuit: "Circuit", path: Union[str, Path], task: Union["Task", str, None] = None,
    **kwargs: Any,
) -> Path:
    """Write the viewer page for ``circuit`` to ``path``; ``kwargs`` go to :func:`viewer_data`.

    Example:
        >>> write_viewer(model, circuit, "circuit.html", corpus_tokens=load_corpus(split="val"))  # doctest: +SKIP
    """
    return CircuitView(viewer_data(model, circuit, task, **kwargs)).save(path)
