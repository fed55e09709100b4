"""The :class:`Plot` object: self-contained HTML that Jupyter renders inline, with circuitsvis inlined.

A plot's HTML carries circuitsvis's JavaScript bundle inline (read from the installed circuitsvis
package), never a CDN ``<script src>``, so a saved notebook or a saved ``.html`` file shows the
plots with the network off. (circuitsvis's own ``RenderedHTML`` serves the CDN version whenever it
can reach the internet; we never go through that choice.) Data goes in as :func:`js_literal`.
"""

from __future__ import annotations

import functools
import html
import json
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import circuitsvis
from torch import Tensor

CIRCUITSVIS_BUNDLE = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"


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

    def save_png(self, path: Union[str, Path], *, width: int = 1200, height: int = 800) -> Path:
        """Write a PNG of the rendered plot (headless Chromium: :func:`~sparselens.viz.screenshot.html_to_png`)."""
        import tempfile

        from sparselens.viz.screenshot import html_to_png

        with tempfile.TemporaryDirectory(prefix="sparselens-plot-") as tmp:
            return html_to_png(self.save(Path(tmp) / "plot.html"), path, width=width, height=height)

    def __repr__(self) -> str:
        return f"<sparselens Plot: {self.title} (rendered in Jupyter; .save('plot.html') for a browser, .save_png('plot.png'))>"


class Mounts:
    """Collects circuitsvis elements; calling it returns the ``<div>`` the element renders into."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, element: str, props: dict[str, Any]) -> str:
        div_id = f"sparselens-{uuid.uuid4().hex[:16]}"
        self.items.append((div_id, element, props))
        return f'<div id="{div_id}" class="sparselens-plot"></div>'


#: the font of every plot's text
STYLE = "font-family: system-ui, sans-serif; font-size: 13px;"


def escape_tokens(tokens: Sequence[str]) -> list[str]:
    """circuitsvis's token views insert token text as HTML; escape it so code such as ``a<b`` shows as typed."""
    return [html.escape(t, quote=False) for t in tokens]
