"""Jupyter conveniences: the HTML reprs of circuits, masks and models show their own numbers, and
plots and viewer pages save as PNG through headless Chromium."""

import io
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from conftest import randomize, tiny_config
from matplotlib.image import imread

from sparselens import HookedSparseTransformer, NodeMask
from sparselens.data import load_tokenizer
from sparselens.model.fingerprint import model_fingerprint
from sparselens.prune import Circuit, EdgeUse, count_edges, count_residual_links


class Cells(HTMLParser):
    """Every table cell's text, and the grid cells' text by their title (the site name)."""

    def __init__(self):
        super().__init__()
        self.cells, self.by_title, self._open = [], {}, None

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._open = [dict(attrs).get("title"), ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._open is not None:
            title, text = self._open
            self.cells.append(text)
            if title:
                self.by_title[title] = text
            self._open = None


def parsed(markup: str) -> Cells:
    cells = Cells()
    cells.feed(markup)
    return cells


@pytest.fixture(scope="module")
def model():
    return randomize(HookedSparseTransformer(tiny_config(n_layers=2, d_model=32, d_head=8, n_ctx=16, d_vocab=64)), seed=3)


def test_node_mask_html_shows_kept_of_total_per_site(model):
    drop = ["L0.neuron[1]", "L0.neuron[2]", "L1.q[h1,3]"]
    mask = NodeMask.full(model.node_registry).drop(drop)
    cells = parsed(mask._repr_html_()).by_title
    for site in model.node_sites:
        kept = site.n_nodes - sum(name.startswith(site.name + "[") for name in drop)
        assert cells[site.name] == f"{kept}/{site.n_nodes}"


def test_circuit_html_shows_size_losses_and_kept_nodes_per_site(model):
    keep = ["L0.attn_in[3]", "L0.q[h0,1]", "L0.k[h0,1]", "L1.neuron[5]", "L1.neuron[9]"]
    mask = NodeMask.from_nodes(model.node_registry, keep)
    circuit = Circuit(
        kept={s.name: mask[s.name].nonzero().flatten().tolist() for s in model.node_sites},
        edge_counts=count_edges(model, mask, EdgeUse()), residual_links=count_residual_links(model, mask),
        task="t", target_ids=(), input_ids=(), n_positions=0, ablation="mean", freeze_norms=True,
        losses={"model": 0.05, "circuit": 0.125}, model_fingerprint=model_fingerprint(model),
    )
    cells = parsed(circuit._repr_html_())
    assert cells.by_title["L1.neuron"] == "2" and cells.by_title["L0.q"] == "1" and cells.by_title["L1.q"] == ""
    assert "5" in cells.cells and "0.1250" in cells.cells and "mean, norms frozen" in cells.cells


def test_model_html_counts_its_nonzero_weights(model):
    with torch.no_grad():
        model.blocks[0].mlp.W_in[:, :7] = 0
    matrices = [v for v in model.state_dict().values() if v.ndim == 2 and v.is_floating_point()]
    nonzero, total = sum(int(v.count_nonzero()) for v in matrices), sum(v.numel() for v in matrices)
    cells = parsed(model._repr_html_())
    assert f"{nonzero:,} of {total:,} ({nonzero / total:.4f})" in cells.cells
    assert cells.by_title["L1.neuron"] == str(model.cfg.d_mlp)


def non_blank_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.ndim == 3 and float(np.std(pixels[..., :3])) > 0.01, "the screenshot is blank"
    return pixels


def test_plots_and_the_viewer_save_as_png(model, tmp_path):
    from sparselens.tasks import get_task
    from sparselens.viz import attention_patterns, show_circuit

    tok = load_tokenizer()
    m = randomize(HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, d_head=16, n_ctx=64, d_vocab=2048), tokenizer=tok))
    task = get_task("single_double_quote", tokenizer=tok)
    batch = task.batch(n=2, split="test")
    plot = attention_patterns(m, batch, heads=[(0, 0)])
    pixels = non_blank_png(plot.save_png(tmp_path / "attention.png", width=640, height=400))
    assert pixels.shape[:2] == (400, 640)
    mask = NodeMask.full(m.node_registry)
    circuit = Circuit(
        kept={s.name: mask[s.name].nonzero().flatten().tolist() for s in m.node_sites},
        edge_counts=count_edges(m, mask, EdgeUse()), residual_links=count_residual_links(m, mask),
        task=task.name, target_ids=(), input_ids=(), n_positions=0, ablation="zero", freeze_norms=False,
        losses={"model": 0.1, "circuit": 0.2}, model_fingerprint=model_fingerprint(m),
    )
    view = show_circuit(m, circuit, task, corpus_tokens=None, n_prompts=2)
    non_blank_png(view.save_png(tmp_path / "viewer.png", width=800, height=500))


def test_png_without_a_browser_says_how_to_get_one(monkeypatch, tmp_path):
    import sparselens.viz.screenshot as screenshot

    monkeypatch.setattr(screenshot, "BROWSERS", ("no-such-browser",))
    monkeypatch.delenv("SPARSELENS_CHROMIUM", raising=False)
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        screenshot.html_to_png(tmp_path / "x.html", tmp_path / "x.png")


def test_matplotlib_results_save_as_png_and_as_a_standalone_page(tmp_path):
    """The figures of bridge evaluations and steering (save_figure_atomic) save by suffix; .html inlines the PNG."""
    import base64
    import re

    from matplotlib.figure import Figure

    from sparselens.files import save_figure_atomic

    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 1, 2], [2, 0, 1])
    png = save_figure_atomic(fig, tmp_path / "plot.png")
    page = save_figure_atomic(fig, tmp_path / "plot.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "http" not in page
    inlined = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1))
    assert inlined[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(tmp_path / "plot.png").shape == imread(io.BytesIO(inlined)).shape
    assert png.stat().st_size > 0 and not list(tmp_path.glob("*.tmp*"))
