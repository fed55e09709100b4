"""The shipped models load by name, are what their cards say, and the demo runs on them."""

import json

import pytest
import torch

from sparselens import HookedSparseTransformer, pretrained
from sparselens.cli import main
from sparselens.tasks import get_task


@pytest.mark.parametrize("name, density", [("sparse-2l-128", 0.125), ("dense-2l-128", 1.0)])
def test_shipped_model_loads_and_matches_its_card(name, density):
    assert name in pretrained.list_models()
    model = HookedSparseTransformer.from_pretrained(name)
    assert model.tokenizer is not None and len(model.tokenizer) == 2048
    for pname, p in model.named_parameters():
        if p.ndim == 2 and "bigram" not in pname:
            assert float((p != 0).float().mean()) == pytest.approx(density, abs=1e-3), pname
    folder = pretrained.resolve(name)
    assert (folder / "train_config.yaml").exists() and (folder / "curves.png").exists()
    last_eval = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
                 if '"eval"' in line][-1]
    assert f"{last_eval['val_loss']:.3f}" in (folder / "README.md").read_text()
    task = get_task("with_as", tokenizer=model.tokenizer)  # both models solve it (README table)
    with torch.no_grad():
        assert float(task.loss(model, task.batch(n=64, split="test"))) <= 0.1


def test_demo_runs_end_to_end(tmp_path, capsys):
    rc = main(["demo", "--steps", "3", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert (tmp_path / "circuit.json").exists() and (tmp_path / "circuit.html").exists()
    assert "Open the circuit viewer" in printed and "circuit size" in printed
    html = (tmp_path / "circuit.html").read_text()
    assert "single_double_quote" in html and "http://" not in html.split("<script")[0]
