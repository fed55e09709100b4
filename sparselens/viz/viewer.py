"""The offline interactive circuit viewer: one self-contained HTML page per circuit.

:func:`viewer_data` gathers everything the page shows: the circuit's nodes, edges
(:mod:`sparselens.prune.edges`) and residual links, and each node's activations on task prompts in
the full model and in the circuit (:func:`~sparselens.viz.analysis.model_and_circuit`) and its
top-activating corpus snippets (:func:`~sparselens.viz.analysis.top_activations`).
:func:`render_html` inlines that data with the viewer's JavaScript and CSS, which ship inside the
package (``sparselens/viz/static``), so the page needs no network and opens from ``file://``.
:func:`write_viewer` writes the page; :func:`show_circuit` shows it inline in Jupyter.

Examples:
    >>> circuit = prune(model, task, target_loss=0.15)      # doctest: +SKIP
    >>> write_viewer(model, circuit, "circuit.html")        # doctest: +SKIP
    >>> show_circuit(model, circuit)   # in Jupyter: the same page inline  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sparselens.nodes import Node, NodeKind
from sparselens.viz.analysis import by_site, model_and_circuit, site_values, top_activations

if TYPE_CHECKING:
    from sparselens.faithfulness import FaithfulnessReport
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit
    from sparselens.prune.edges import Edge
    from sparselens.tasks.base import Task

STATIC_DIR = Path(__file__).parent / "static"
DATA_SCHEMA = "sparselens.viewer"
DATA_VERSION = 2


def _round(values: Tensor, digits: int = 4) -> list:
    """Nested lists of floats at ``digits`` significant digits (keeps the page small)."""
    return json.loads(json.dumps(values.tolist()), parse_float=lambda s: float(f"{float(s):.{digits}g}"))


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


def _prompt_activations(
    model: "HookedSparseTransformer", circuit: "Circuit", task: "Task", nodes: list[Node], n_prompts: int, seed: int
) -> tuple[list[dict], dict[str, dict]]:
    """Task prompts, and each node's activations on them in the full model and in the circuit.

    Returns:
        prompts: one record per prompt row (token ids up to the read position, targets, logit diffs).
        acts: ``{node name: {"full": [prompt][token], "circuit": [prompt][token], "max_abs", "corr"}}``.
    """
    batch = task.batch(n=max(1, n_prompts // 2), split=circuit.loss_split, seed=seed).to(model.W_E.device)
    sites = by_site(model, nodes)
    runs = model_and_circuit(model, batch, circuit, {site.hook_name for site, _ in sites.values()})

    rows = torch.arange(batch.tokens.shape[0], device=batch.tokens.device)
    lengths = (batch.read_pos + 1).tolist()

    def logit_diff(logits: Float[Tensor, "row pos vocab"]) -> list[float]:
        at_read = logits[rows, batch.read_pos]  # [row, vocab]
        return _round(at_read[rows, batch.correct] - at_read[rows, batch.wrong])

    assert runs.circuit is not None and runs.circuit_logits is not None  # model_and_circuit ran the circuit given
    diff_full, diff_circuit = logit_diff(runs.logits), logit_diff(runs.circuit_logits)
    prompts = [{
        "pair": r % batch.n_pairs, "label": "A" if r < batch.n_pairs else "B", "ids": batch.tokens[r, :n].tolist(),
        "correct": int(batch.correct[r]), "wrong": int(batch.wrong[r]),
        "logit_diff": {"full": diff_full[r], "circuit": diff_circuit[r]},
    } for r, n in enumerate(lengths)]

    valid = torch.arange(batch.tokens.shape[1], device=rows.device)[None, :] <= batch.read_pos[:, None]  # [row, pos]
    acts: dict[str, dict] = {}
    for site, indices in sites.values():
        full = site_values(runs.full, site, indices)  # [row, pos, n]
        circ = site_values(runs.circuit, site, indices)
        for j, index in enumerate(indices):
            f, c = full[..., j], circ[..., j]  # [row, pos]
            f_list, c_list = _round(f), _round(c)
            acts[site.node(index).name] = {
                "full": [f_list[r][:n] for r, n in enumerate(lengths)],
                "circuit": [c_list[r][:n] for r, n in enumerate(lengths)],
                "max_abs": float(f"{float(torch.maximum(f[valid].abs().max(), c[valid].abs().max())):.4g}"),
                "corr": _correlation(f[valid], c[valid]),
            }
    return prompts, acts


def _snippets(model: "HookedSparseTransformer", nodes: list[Node], corpus_tokens: Int[Tensor, "n_seq n_ctx"],
              n_snippets: int, corpus_rows: int, seed: int) -> dict[str, list[dict]]:
    """Per node, its :func:`~sparselens.viz.analysis.top_activations` over ``corpus_rows`` random rows, as page records
    ``{"ids": [W], "acts": [W], "peak": int, "value": float}``."""
    rows = torch.randperm(corpus_tokens.shape[0], generator=torch.Generator().manual_seed(seed))[:corpus_rows]
    found = top_activations(model, nodes, corpus_tokens[rows], k=min(n_snippets, len(rows)), progress=False)
    records: dict[str, list[dict]] = {}
    for name, snippets in found.items():
        records[name] = []
        for ids, acts, peak in zip(snippets.tokens, snippets.activations, snippets.centers):
            values = _round(acts)
            records[name].append({"ids": ids.tolist(), "acts": values, "peak": peak, "value": values[peak]})
    return records


def _sources(edges: list["Edge"]) -> list[dict]:
    """The edges' sources outside the blocks, ``{"name", "kind", "id"}`` (``embed:<token id>``,
    ``pos:<position>``, ``bigram:<token id>``), each kind in id order."""
    order = {"embed": 0, "pos": 1, "bigram": 2}
    ends = {tuple(e.src.split(":")) for e in edges if e.src.split(":")[0] in order}
    return [{"name": f"{kind}:{i}", "kind": kind, "id": int(i)}
            for kind, i in sorted(ends, key=lambda end: (order[end[0]], int(end[1])))]


def _layout_rows(model: "HookedSparseTransformer", nodes: list[Node]) -> list[dict]:
    """The page's rows, top to bottom in forward order: per layer the attention read, Q/K/V grouped
    by head, the attention write, the MLP read, the neurons and the MLP write (empty rows omitted)."""
    sites = by_site(model, nodes)

    def names(layer: int, kind: NodeKind) -> list[str]:
        site, indices = sites.get(f"L{layer}.{kind.value}", (None, []))
        return [site.node(i).name for i in indices] if site else []

    rows = []
    for layer in range(model.cfg.n_layers):
        heads: dict[int, list[str]] = {}
        for head_kind in (NodeKind.Q, NodeKind.K, NodeKind.V):
            for name in names(layer, head_kind):
                head = model.node_registry.node(name).head
                assert head is not None  # every Q, K and V channel is in a head
                heads.setdefault(head, []).append(name)
        sections: tuple[tuple[Union[NodeKind, str], str], ...] = (
            (NodeKind.ATTN_IN, "attention read"), ("qkv", "Q/K/V by head"),
            (NodeKind.ATTN_OUT, "attention write"), (NodeKind.MLP_IN, "MLP read"),
            (NodeKind.NEURON, "neurons"), (NodeKind.MLP_OUT, "MLP write"))
        for kind, label in sections:
            if kind == "qkv":
                groups = [{"label": f"head {h}", "nodes": heads[h]} for h in sorted(heads)]
            else:
                assert isinstance(kind, NodeKind)  # every section but "qkv" is one node kind
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
    report: Union["FaithfulnessReport", str, Path, None] = None,
) -> dict[str, Any]:
    """Everything the viewer page shows, as a JSON-ready dict.

    Args:
        model: the model the circuit was pruned from (checked by fingerprint).
        circuit: the circuit.
        task: the task (object or name) whose prompts are shown; default the circuit's own task.
        n_prompts: task prompts shown per node (whole A/B pairs: ``max(1, n_prompts // 2)`` pairs).
        corpus_tokens: ``[n_seq, seq_len]`` pretraining rows (``seq_len <= n_ctx``) for top-activating
            snippets; None: none.
        n_snippets: snippets per node (:func:`~sparselens.viz.analysis.top_activations`: largest
            ``|activation|``, at most one per row).
        corpus_rows: how many corpus rows (drawn at random with ``seed``) are scanned for snippets.
        selected: a circuit node whose panel is open when the page loads.
        seed: seed of the task prompts and of the corpus sample.
        report: a :class:`~sparselens.faithfulness.FaithfulnessReport` of this circuit (or its JSON
            file): nodes are then coloured by its model/circuit correlation, and each node's panel
            shows its row and flags (and its head's, for Q/K/V channels); the header lists the flags.

    Returns:
        ``header`` (task, losses, node/edge counts, edge counts by kind, residual links, ablation,
        norm freezing, model shape), ``rows`` (layer-by-layer layout, Q/K/V grouped by head),
        ``nodes`` (per node: site, kind, role, head, channel, activations on each prompt in the full
        model and in the circuit ``[prompt][token]``, their correlation, snippets, incoming/outgoing
        edge indices, residual link indices), ``edges`` (``kind``, ``src``, ``dst``, ``weight`` as
        :meth:`Circuit.edges` gives them), ``residual_links`` (``[write, read]`` node pairs, not
        edges), ``prompts``, ``sources`` (embedding, position and bigram ends of edges),
        ``targets`` (unembedding ends), ``vocab`` (id -> token string) and ``faithfulness`` (None,
        or the report's metrics, flags and test pairs; each node then has ``faith`` and, for Q/K/V
        channels, ``head_faith``).

    Raises:
        ValueError: the circuit belongs to a different model, ``selected`` is not in the circuit, or
            ``report`` is of another circuit.
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
    faith = _faithfulness(report, circuit, names) if report is not None else None
    edges = circuit.edges(model)
    links = circuit.residual_link_pairs(model)
    prompts, acts = _prompt_activations(model, circuit, task, nodes, n_prompts, seed)
    snippets = _snippets(model, nodes, corpus_tokens, n_snippets, corpus_rows, seed) if (
        corpus_tokens is not None and n_snippets > 0) else {}
    sources = _sources(edges)
    used = {t for p in prompts for t in (*p["ids"], p["correct"], p["wrong"])}
    used.update(t for found in snippets.values() for s in found for t in s["ids"])
    used.update(s["id"] for s in sources if s["kind"] != "pos")
    used.update(circuit.target_ids)

    records: dict[str, dict] = {}
    for node in nodes:
        records[node.name] = {
            "name": node.name, "site": node.site.name, "hook": node.site.hook_name, "layer": node.site.layer,
            "kind": node.site.kind.value, "role": node.site.kind.role, "head": node.head,
            "channel": node.index % node.site.channel_shape[-1], "index": node.index,
            "act": acts[node.name], "snippets": snippets.get(node.name, []), "in": [], "out": [], "links": [],
        }
        if faith is not None:
            records[node.name]["faith"] = faith["nodes"].get(node.name)
            if node.head is not None:
                records[node.name]["head_faith"] = faith["heads"].get(f"L{node.site.layer}H{node.head}")
    edge_records = []
    for i, e in enumerate(edges):
        edge_records.append({"kind": e.kind, "src": e.src, "dst": e.dst, "weight": float(f"{e.weight:.4g}")})
        if e.src in records:
            records[e.src]["out"].append(i)
        if e.dst in records:
            records[e.dst]["in"].append(i)
    for i, pair in enumerate(links):
        for end in pair:
            records[end]["links"].append(i)

    vocab_ids = sorted(used)
    strings = model.to_str_tokens(torch.tensor(vocab_ids, dtype=torch.long)) if vocab_ids else []
    cfg = model.cfg
    header = {
        "task": circuit.task, "prompts_task": getattr(task, "name", circuit.task), "losses": dict(circuit.losses),
        "loss_split": circuit.loss_split, "n_nodes": circuit.n_nodes, "n_edges": circuit.n_edges,
        "edge_counts": dict(circuit.edge_counts), "residual_links": circuit.residual_links,
        "ablation": circuit.ablation, "freeze_norms": circuit.freeze_norms, "seed": circuit.seed,
        "model_fingerprint": circuit.model_fingerprint, "model_nodes": model.node_registry.n_nodes,
        "model": {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads, "d_head": cfg.d_head,
                  "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab},
        "snippets": bool(snippets),
    }
    return {
        "schema": DATA_SCHEMA, "version": DATA_VERSION, "header": header, "rows": _layout_rows(model, nodes),
        "nodes": records, "edges": edge_records, "residual_links": [list(pair) for pair in links], "prompts": prompts,
        "sources": sources, "targets": [{"id": t, "name": f"unembed:{t}"} for t in circuit.target_ids],
        "vocab": {str(i): s for i, s in zip(vocab_ids, strings, strict=True)}, "selected": selected,
        "faithfulness": None if faith is None else {k: faith[k] for k in ("metrics", "flags", "n_pairs", "checks")},
    }


def _faithfulness(report: Union["FaithfulnessReport", str, Path], circuit: "Circuit", names: list[str]) -> dict[str, Any]:
    """The report's rows for the viewer (JSON-safe), after checking it is a report of ``circuit``."""
    from sparselens.faithfulness import FaithfulnessReport
    from sparselens.files import json_safe

    if not isinstance(report, FaithfulnessReport):
        report = FaithfulnessReport.load(report)
    about = report.circuit
    if (about.get("model_fingerprint") != circuit.model_fingerprint or about.get("task") != circuit.task
            or about.get("n_nodes") != circuit.n_nodes):
        raise ValueError(
            f"the faithfulness report is of another circuit ({about.get('task')!r}, {about.get('n_nodes')} nodes, model "
            f"{about.get('model_fingerprint')}), not this one ({circuit.task!r}, {circuit.n_nodes} nodes, model "
            f"{circuit.model_fingerprint}); run sparselens.faithfulness.evaluate on this circuit")
    stray = sorted(set(report.nodes) - set(names))
    if stray:
        raise ValueError(f"the faithfulness report has rows for nodes outside this circuit ({stray[:3]}); it is of "
                         "another circuit")
    return json_safe({"metrics": report.metrics, "flags": report.flags, "n_pairs": report.n_pairs,
                       "checks": report.checks, "nodes": report.nodes, "heads": report.heads})


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

    def save_png(self, path: Union[str, Path], *, width: int = 1400, height: int = 900) -> Path:
        """Write a PNG of the viewer as it opens (headless Chromium: :func:`~sparselens.viz.screenshot.html_to_png`)."""
        import tempfile

        from sparselens.viz.screenshot import html_to_png

        with tempfile.TemporaryDirectory(prefix="sparselens-viewer-") as tmp:
            return html_to_png(self.save(Path(tmp) / "circuit.html"), path, width=width, height=height)

    def __repr__(self) -> str:
        h = self.data["header"]
        return f"CircuitView({h['task']!r}: {h['n_nodes']} nodes, {h['n_edges']} edges)"


def write_viewer(
    model: "HookedSparseTransformer", circuit: "Circuit", path: Union[str, Path], task: Union["Task", str, None] = None,
    **kwargs: Any,
) -> Path:
    """Write the viewer page for ``circuit`` to ``path``; ``kwargs`` go to :func:`viewer_data`.

    Examples:
        >>> write_viewer(model, circuit, "circuit.html", corpus_tokens=load_corpus(split="val"))  # doctest: +SKIP
    """
    return show_circuit(model, circuit, task, **kwargs).save(path)


def show_circuit(
    model: "HookedSparseTransformer", circuit: "Circuit", task: Union["Task", str, None] = None, **kwargs: Any
) -> CircuitView:
    """The viewer page for ``circuit``, shown inline when it is a Jupyter cell's value (``.save(path)`` writes it).

    ``kwargs`` go to :func:`viewer_data` (``n_prompts``, ``corpus_tokens``, ``selected``, ...).

    Examples:
        >>> show_circuit(model, circuit, task)  # doctest: +SKIP
    """
    return CircuitView(viewer_data(model, circuit, task, **kwargs))
