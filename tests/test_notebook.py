"""The notebooks run top to bottom and show their plots, reports and the viewer, offline; they are stored without outputs."""

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import mkdocs_hooks  # noqa: E402  # scripts/ is not a package

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "01_quickstart.ipynb"


def html_outputs(cell) -> str:
    return "".join(out.get("data", {}).get("text/html", "") for out in cell.get("outputs", []))


def executed(path: Path, workdir: Path) -> dict:
    """Run the notebook top to bottom in ``workdir``, progress bars off as in the docs build; its code
    cells by first line, with no error output. With SPARSELENS_EXECUTED_NOTEBOOKS=1 the executed
    notebook is saved for the docs build to render (scripts/mkdocs_hooks.py)."""
    nb = nbformat.read(path, as_version=4)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TQDM_DISABLE", "1")  # the kernel inherits the environment
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    if mkdocs_hooks.enabled():
        mkdocs_hooks.save_executed(nb, path)
    sources = {c.source.splitlines()[0]: c for c in code}
    return sources


def test_quickstart_notebook_executes_and_renders(tmp_path):
    sources = executed(NOTEBOOK, tmp_path)
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


FAITHFULNESS = Path(__file__).parent.parent / "notebooks" / "02_faithfulness.ipynb"


def text_outputs(cell) -> str:
    return "".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in cell.get("outputs", []))


BRIDGES = Path(__file__).parent.parent / "notebooks" / "03_bridges.ipynb"
YOUR_OWN_TASK = Path(__file__).parent.parent / "notebooks" / "04_your_own_task.ipynb"


def test_notebooks_are_stored_without_outputs():
    for path in sorted(NOTEBOOK.parent.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        stored = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not stored, f"{path.name} is stored with outputs in {stored}; clear them before committing"


def test_faithfulness_notebook_executes_and_renders(tmp_path):
    sources = executed(FAITHFULNESS, tmp_path)
    report = html_outputs(sources["report = faithfulness.evaluate(model, circuit, task, n_pairs=32)"])
    assert "sparselens-faithfulness" in report and "Flags" in report and "adversarial_loss" in report
    metrics = text_outputs(sources["m = report.metrics"])
    assert "faithfulness" in metrics and "adversarial_loss" in metrics and "nan" not in metrics.split("kl_answer")[0]
    side_by_side = text_outputs(sources[next(k for k in sources if k.startswith("faithful = "))])
    assert "stochastic pruning" in side_by_side and side_by_side.count("\n") >= 7
    viewer = html_outputs(sources["viz.show_circuit(model, circuit, task, corpus_tokens=None, report=report)"])
    assert "<iframe" in viewer and "colour-by" in viewer and "&quot;faith&quot;" in viewer


def test_every_notebook_is_on_the_docs_site():
    """mkdocs.yml's nav lists each notebook (rendered there with its outputs, by mkdocs-jupyter)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    text = (root / "mkdocs.yml").read_text()
    nav = yaml.load(text, Loader=yaml.BaseLoader)["nav"]  # BaseLoader: the !!python/name tags stay strings

    def pages(entry):
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, list):
            for item in entry:
                yield from pages(item)
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from pages(value)

    listed = set(pages(nav))
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{notebook.name}" in listed, f"{notebook.name} is not in mkdocs.yml's nav"
    assert (root / "docs" / "notebooks").resolve() == (root / "notebooks").resolve()


def test_your_own_task_notebook_defines_prunes_and_checks_a_task(tmp_path):
    sources = executed(YOUR_OWN_TASK, tmp_path)
    pair = text_outputs(sources["def set_or_list(tokenizer=None):"])
    assert "set()" in pair and "target_a='add'" in pair and "target_b='append'" in pair
    losses = text_outputs(sources["from sparselens.interventions import pretraining_means"])
    assert "on 64 test pairs: model" in losses and "empty circuit" in losses
    circuit = html_outputs(sources[next(k for k in sources if k.startswith("target = "))])
    assert "Circuit for &#x27;set_or_list&#x27;" in circuit or "Circuit for 'set_or_list'" in circuit
    report = html_outputs(sources[next(k for k in sources if k.startswith("report = "))])
    assert "sparselens-faithfulness" in report
    assert "iframe" in html_outputs(sources[next(k for k in sources if k.startswith("viz.show_circuit"))])


def test_bridges_notebook_evaluates_and_steers_with_the_shipped_bridges(tmp_path):
    sources = executed(BRIDGES, tmp_path)
    hybrid = text_outputs(sources['site = bridges.site("L1.resid_pre")'])
    assert "KL(dense || sparse)" in hybrid and "dense from L1.resid_pre" in hybrid
    table = text_outputs(sources["evaluation = evaluate_bridges(dense, sparse, bridges, val, progress=False)"])
    assert table.count("| L") == 4 and "| final |" in table
    for first in ("evaluation = evaluate_bridges(", "result = steer("):  # the plots render as images
        cell = sources[next(k for k in sources if k.startswith(first))]
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), first
    steering = text_outputs(sources["result = steer(dense, sparse, bridges, steer_site, channel, batch, reference_tokens=val, progress=False)"])
    assert "| 1.00 |" in steering and "ratio rms_dense/rms_sparse" in steering
    edit, random_dense, random_channel = (float(x) for x in steering.split("| 1.00 |")[1].split("|")[:3])
    assert edit > 3 * max(random_dense, random_channel), steering  # at the final residual the channel moves the dense model


def test_docs_build_renders_the_tests_executed_copy_and_refuses_a_missing_or_stale_one(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from mkdocs.exceptions import PluginError

    monkeypatch.setattr(mkdocs_hooks, "EXECUTED_DIR", tmp_path / "executed-notebooks")
    source = tmp_path / "notebooks" / "x.ipynb"
    source.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, source)
    page = SimpleNamespace(abs_src_path=str(source))
    monkeypatch.setenv(mkdocs_hooks.ENV_VAR, "1")
    with pytest.raises(PluginError, match="does not exist"):
        mkdocs_hooks.on_files([page], None)
    copy = mkdocs_hooks.save_executed(nbformat.read(source, as_version=4), source)
    mkdocs_hooks.on_files([page], None)
    assert page.abs_src_path == str(copy) and copy.parent.name == "executed-notebooks"
    nb.cells[0].source = "2 + 2"  # the notebook changed after the tests ran it
    nbformat.write(nb, source)
    with pytest.raises(PluginError, match="another version"):
        mkdocs_hooks.on_files([SimpleNamespace(abs_src_path=str(source))], None)
    monkeypatch.setenv(mkdocs_hooks.ENV_VAR, "0")  # unset: the build executes the source itself
    untouched = SimpleNamespace(abs_src_path=str(source))
    mkdocs_hooks.on_files([untouched], None)
    assert untouched.abs_src_path == str(source)


def test_mkdocs_config_loads_with_the_notebook_hook():
    """mkdocs validates the whole config (plugins, hooks) as `./run docs` would, without building."""
    from mkdocs.config import load_config

    config = load_config(str(Path(__file__).resolve().parents[1] / "mkdocs.yml"))
    assert [Path(h).name for h in config["hooks"]] == ["mkdocs_hooks.py"]
    assert "mkdocs-jupyter" in config["plugins"] and "mkdocstrings" in config["plugins"]
