"""``circuit_size_plot``: task loss against circuit size (nodes, and edges) for a sweep, as inline SVG.

Examples:
    >>> circuit_size_plot(prune_sweep(model, task, [0.1, 0.15, 0.3]))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from sparselens.viz.plot import STYLE, Plot

if TYPE_CHECKING:
    from sparselens.prune.circuit import Circuit


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
        ValueError: an empty list or a non-finite value (TypeError and KeyError: an entry without
            sizes or losses, or a missing loss name).
    """
    points = _sweep_points(results, loss)
    refs: dict[str, float] = next((p["refs"] for p in points if p["refs"]), {})
    ys = [p["loss"] for p in points] + list(refs.values())
    y_lo, y_hi, y_ticks = _axis(min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0, log=False)
    panels = [_panel_svg(points, key, label, y_lo, y_hi, y_ticks, refs)
              for key, label in (("n_nodes", "nodes in circuit"), ("n_edges", "edges in circuit"))]
    body = (f'<div style="{STYLE}"><div>Loss ({html.escape(loss)}) against circuit size, {len(points)} circuits</div>'
            f'<div style="display: flex; flex-wrap: wrap; gap: 12px;">{"".join(panels)}</div></div>')
    data = {key: [p[key] for p in points] for key in ("n_nodes", "n_edges", "loss")}
    return Plot(body, data=data, title=f"loss ({loss}) against circuit size")
