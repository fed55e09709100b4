"""Writing result files so that an interruption never leaves a half-written one behind, and strict JSON."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Union


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` to ``path`` (parents created) through a temporary file renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def save_figure_atomic(fig: Any, path: Union[str, Path], dpi: int = 100) -> Path:
    """Save a matplotlib figure to ``path`` through a temporary file.

    The format comes from the suffix (``.png``, ``.svg``, ``.pdf``...); ``.html`` writes a
    standalone page with the figure inlined as a PNG (opens from disk, no network).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".html", ".htm"):
        import base64
        import html
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        title = html.escape(path.stem)
        image = base64.b64encode(buffer.getvalue()).decode("ascii")
        return write_text_atomic(path, f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>'
                                       f'<body><img alt="{title}" src="data:image/png;base64,{image}"></body></html>\n')
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
    return path


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
