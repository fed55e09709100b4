"""FaithfulnessReport: what the checks found, as a table, flags, per-node and per-head rows; JSON and HTML."""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from sparselens.files import json_safe, write_text_atomic

SCHEMA = "sparselens.faithfulness"
SCHEMA_VERSION = 1


@dataclass
class FaithfulnessReport:
    """The result of :func:`sparselens.faithfulness.evaluate`.

    Attributes:
        metrics: flat name -> value (see each check's module for definitions; NaN where undefined).
        nodes: per kept node: ``corr`` (circuit vs model activation), ``mean_model``,
            ``mean_circuit``, ``sign_flip``, ``repurposed``, ``constant``.
        heads: per head with kept Q/K/V channels (``L0H3``): ``js``, entropies, ``uniform_in_circuit``...
        flags: sentences to read first.
        notes: caveats (metrics that could not be computed, checks skipped, and why).
        checks: the checks that ran; seconds: how long each took.
        circuit: what was evaluated (task, size, ablation, norms, the model's fingerprint).
        n_pairs, seed: the test pairs and the seed of every random draw.
    """

    metrics: dict[str, float]
    nodes: dict[str, dict[str, Any]]
    heads: dict[str, dict[str, Any]]
    flags: list[str]
    notes: list[str]
    checks: list[str]
    seconds: dict[str, float]
    circuit: dict[str, Any]
    n_pairs: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, **asdict(self)}

    def save(self, path: Union[str, Path]) -> Path:
        """Versioned JSON (NaN written as null)."""
        return write_text_atomic(path, json.dumps(json_safe(self.to_dict()), indent=1))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "FaithfulnessReport":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable faithfulness report ({err})") from None
        if data.get("schema") != SCHEMA or data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"{path} is not a sparselens faithfulness report of version {SCHEMA_VERSION}")
        data = {k: v for k, v in data.items() if k not in ("schema", "version")}
        data["metrics"] = {k: (math.nan if v is None else v) for k, v in data["metrics"].items()}
        for table in ("nodes", "heads"):  # NaN was written as null
            data[table] = {name: {k: (math.nan if v is None else v) for k, v in row.items()} for name, row in data[table].items()}
        return cls(**data)

    # ------------------------------------------------------------------ display
    def table(self) -> str:
        """The metrics as a plain-text table."""
        width = max(len(k) for k in self.metrics) if self.metrics else 10
        return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in self.metrics.items())

    def __repr__(self) -> str:
        c = self.circuit
        lines = [f"FaithfulnessReport for a {c.get('n_nodes')}-node circuit on {c.get('task')!r} "
                 f"({self.n_pairs} test pairs; checks: {', '.join(self.checks)})", self.table()]
        lines += [f"! {flag}" for flag in self.flags]
        return "\n".join(lines)

    def _body(self) -> str:
        c = self.circuit
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in self.metrics.items())
        flags = "".join(f"<li>{html.escape(f)}</li>" for f in self.flags) or "<li>none</li>"
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        nodes = sorted(((v.get("corr"), k) for k, v in self.nodes.items()), key=lambda t: (t[0] is None or math.isnan(t[0]), t[0]))
        heads = sorted(((v.get("js", 0.0), k) for k, v in self.heads.items()), reverse=True)
        return (
            f"<h2>Faithfulness of a {c.get('n_nodes')}-node, {c.get('n_edges')}-edge circuit on "
            f"<code>{html.escape(str(c.get('task')))}</code></h2>"
            f"<p>{html.escape(str(c.get('ablation')))} ablation, norms {'frozen' if c.get('freeze_norms') else 'free'}; "
            f"{self.n_pairs} test pairs, seed {self.seed}; checks {html.escape(', '.join(self.checks))} "
            f"({sum(self.seconds.values()):.0f} s).</p>"
            f"<h3>Flags</h3><ul class='flags'>{flags}</ul>"
            f"<h3>Metrics</h3><table>{rows}</table>"
            + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "")
            + (f"<h3>Nodes: correlation of circuit and model activations</h3>"
               f"{_bars([(k, v) for v, k in nodes], -1.0, 1.0, lambda v: '#c44' if v < 0.5 else '#4a4')}" if nodes else "")
            + (f"<h3>Heads: JS divergence of attention at the read position (nats)</h3>"
               f"{_bars([(k, v) for v, k in heads], 0.0, math.log(2), lambda v: '#c44' if v > 0.2 else '#48c')}" if heads else "")
        )

    def _repr_html_(self) -> str:
        return f"<div class='sparselens-faithfulness'>{self._body()}</div>"

    def to_html(self, path: Union[str, Path]) -> Path:
        """One offline page: the flags, the metrics table, per-node and per-head bar charts."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
                 "td{border:1px solid #ccc;padding:2px 8px}.flags li{color:#a00}svg text{font-size:10px}")
        path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>sparselens faithfulness</title>"
                        f"<style>{style}</style></head><body>{self._body()}</body></html>")
        return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _bars(items: list[tuple[str, Optional[float]]], lo: float, hi: float, colour: Any, limit: int = 60) -> str:
    """A horizontal bar chart as inline SVG (no scripts, no network)."""
    items = items[:limit]
    row, label, width = 14, 150, 300
    parts = [f"<svg width='{label + width + 60}' height='{row * len(items) + 4}' xmlns='http://www.w3.org/2000/svg'>"]
    zero = label + width * (0 - lo) / (hi - lo)
    for i, (name, value) in enumerate(items):
        y = i * row + 2
        parts.append(f"<text x='{label - 4}' y='{y + 10}' text-anchor='end'>{html.escape(name)}</text>")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            parts.append(f"<text x='{zero + 4}' y='{y + 10}'>constant</text>")
            continue
        x = label + width * (max(lo, min(hi, value)) - lo) / (hi - lo)
        parts.append(f"<rect x='{min(x, zero):.1f}' y='{y}' width='{abs(x - zero):.1f}' height='{row - 3}' fill='{colour(value)}'/>")
        parts.append(f"<text x='{label + width + 4}' y='{y + 10}'>{value:.2f}</text>")
    parts.append("</svg>")
    return "".join(parts)
