"""The quickstart notebook runs top to bottom and shows its plots and the viewer, offline."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "01_quickstart.ipynb"


def html_outputs(cell) -> str:
    return "".join(out.get("data", {}).get("text/html", "") for out in cell.get("outputs", []))


def test_quickstart_notebook_executes_and_renders(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    sources = {c.source.splitlines()[0]: c for c in code}
    attention = [c for first, c in sources.items() if first.startswith("viz.attention_patterns")]
    assert len(attention) == 2
    for cell in attention:  # circuitsvis, with its JavaScript inlined (no CDN)
        html = html_outputs(cell)
        assert "CircuitsVis" in html and "unpkg.com" not in html
    assert "CircuitsVis" in html_outputs(sources["viz.node_activations(model, batch, nodes=circuit.node_names(model)[:3], circuit=circuit, prompts=[0, 8])"])  # noqa: E501
    viewer = html_outputs(sources["viz.show_circuit(model, circuit, task, corpus_tokens=None)"])
    assert "<iframe" in viewer and "data-node" in viewer
    circuit_repr = "".join(o.get("data", {}).get("text/plain", "") for o in sources[next(k for k in sources if k.startswith("target ="))].outputs)
    assert "Circuit for 'single_double_quote'" in circuit_repr
