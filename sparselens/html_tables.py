"""Small HTML pictures for Jupyter's ``_repr_html_``: a key-value table and a layer x site grid.

Self-contained markup (inline styles, no scripts), so the objects render the same in JupyterLab,
VS Code and a static notebook page.

Examples:
    >>> key_values([("nodes", "37"), ("edges", "412")])           # '<table ...>...</table>'
    >>> site_grid({"L0.neuron": 3, "L1.q": 5}, totals={"L0.neuron": 512, "L1.q": 128})
"""

from __future__ import annotations

import html
import re
from typing import Mapping, Optional, Sequence

_CELL = "padding:2px 8px;border:1px solid #ddd;text-align:{align}"
_SITE = re.compile(r"^L(?P<layer>\d+)\.(?P<kind>[a-z_]+)$")


def heading(text: str) -> str:
    return f"<div style='font-weight:bold;margin:4px 0'>{html.escape(text)}</div>"


def key_values(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table, one ``(key, value)`` per row (both escaped)."""
    body = "".join(
        f"<tr><td style='{_CELL.format(align='left')}'>{html.escape(k)}</td>"
        f"<td style='{_CELL.format(align='right')}'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table style='border-collapse:collapse;font-size:12px'>{body}</table>"


def site_grid(counts: Mapping[str, int], totals: Optional[Mapping[str, int]] = None) -> str:
    """Layers as rows, site kinds as columns (in first-seen order); each cell the kept count.

    ``counts`` and ``totals`` are keyed by site name (``L{layer}.{kind}``). A cell is shaded by the
    kept fraction when ``totals`` is given, else by its share of the largest count; empty cells are blank.
    """
    names = list(totals) if totals is not None else list(counts)
    parsed = [(name, _SITE.match(name)) for name in names]
    kinds: list[str] = []
    layers: list[int] = []
    for _, m in parsed:
        if m is None:
            continue
        if m["kind"] not in kinds:
            kinds.append(m["kind"])
        if int(m["layer"]) not in layers:
            layers.append(int(m["layer"]))
    peak = max([counts.get(n, 0) for n in names] + [1])
    head = "".join(f"<th style='{_CELL.format(align='center')}'>{html.escape(k)}</th>" for k in kinds)
    rows = []
    for layer in sorted(layers):
        cells = []
        for kind in kinds:
            name = f"L{layer}.{kind}"
            kept = counts.get(name, 0)
            total = None if totals is None else totals.get(name)
            share = (kept / total if total else 0.0) if totals is not None else kept / peak
            text = "" if not kept else (f"{kept}/{total}" if total is not None else str(kept))
            shade = f"background:rgba(63,81,181,{0.08 + 0.6 * share:.2f})" if kept else ""
            cells.append(f"<td style='{_CELL.format(align='right')};{shade}' title='{name}'>{text}</td>")
        rows.append(f"<tr><th style='{_CELL.format(align='left')}'>L{layer}</th>{''.join(cells)}</tr>")
    return (f"<table style='border-collapse:collapse;font-size:12px'><tr><th></th>{head}</tr>"
            f"{''.join(rows)}</table>")


__all__ = ["heading", "key_values", "site_grid"]
