"""`sparselens train --config cfg.yaml`, YAML configs, data sources, metrics, and hostile inputs."""

import json

import pytest
import torch
import yaml
from test_train import tiny_train_config

from sparselens import HookedSparseTransformer
from sparselens.cli import main
from sparselens.train import DataConfig, TrainConfig, Trainer, load_tokens
from sparselens.train.metrics import validation_stats
from sparselens.train.trainer import CURVES_FILE, METRICS_FILE, MODEL_DIR

YAML = """\
model:
  n_layers: 2
  d_model: 32
  d_head: 8
  n_ctx: 16
  d_vocab: 64
  seed: 0
data:
  source: synthetic
  synthetic_sequences: 32
n_steps: 6
batch_size: 4
lr: 0.01
l0_target: 0.125
log_every: 2
eval_every: 3
eval_batches: 1
checkpoint_every: 3
device: cpu
"""


def write_yaml(tmp_path, text=YAML, **changes):
    config = yaml.safe_load(text)
    config.update(changes)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_trains_and_writes_metrics_curves_and_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(write_yaml(tmp_path)), "--out-dir", str(out), "--no-progress"]) == 0
    assert "model saved to" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in train] == [2, 4, 6] and [r["step"] for r in evals] == [0, 3, 6]
    last = evals[-1]
    assert last["l0"] == 0.125 and set(last["l0_actual"]) >= {"embed.W_E", "blocks.1.mlp.fc_out.weight"}
    assert len(last["kurtosis"]) == 2 and len(last["dead_neurons"]) == 2
    assert all(k in train[-1] for k in ("train_loss", "lr", "l0", "tokens"))
    assert (out / CURVES_FILE).stat().st_size > 10_000
    model = HookedSparseTransformer.from_pretrained(out / MODEL_DIR)
    fc_in = model.blocks[0].mlp.fc_in.weight
    assert int((fc_in != 0).sum()) == round(0.125 * fc_in.numel())
    assert yaml.safe_load((out / "config.yaml").read_text())["l0_target"] == 0.125


def test_cli_stop_and_resume(tmp_path, capsys):
    cfg = write_yaml(tmp_path)
    out = str(tmp_path / "run")
    assert main(["train", "--config", str(cfg), "--out-dir", out, "--no-progress", "--stop-at", "4"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert main(["train", "--config", str(cfg), "--out-dir", out, "--no-progress", "--resume"]) == 0
    assert "model saved to" in capsys.readouterr().out


@pytest.mark.parametrize("l0", [1.5, 0, -0.25, "half"])
def test_l0_outside_zero_one_is_refused(tmp_path, capsys, l0):
    assert main(["train", "--config", str(write_yaml(tmp_path, l0_target=l0))]) == 2
    err = capsys.readouterr().err
    assert "l0_target must be a fraction in (0, 1]" in err and "cfg.yaml" in err
    with pytest.raises(ValueError, match="l0_target"):
        tiny_train_config(tmp_path, l0_target=l0)


def test_config_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--config", str(write_yaml(tmp_path, n_stepz=5))]) == 2
    assert "did you mean 'n_steps'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="anneal_start"):
        tiny_train_config(tmp_path, anneal_start=0.6, anneal_end=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_train_config(tmp_path, batch_size=0)


def test_yaml_round_trip_and_scientific_notation(tmp_path):
    cfg = tiny_train_config(tmp_path, sparsify_biases=True)
    path = tmp_path / "round.yaml"
    cfg.to_yaml(path)
    assert TrainConfig.from_yaml(path).to_dict() == cfg.to_dict()
    # plain PyYAML would read 1e-2 as a string
    loaded = TrainConfig.from_yaml(write_yaml(tmp_path, YAML.replace("lr: 0.01", "lr: 1e-2")))
    assert loaded.lr == 0.01


def test_pt_data_source_and_its_errors(tmp_path):
    tokens = torch.randint(0, 64, (20, 16))
    torch.save(tokens, tmp_path / "tokens.pt")
    splits = load_tokens(DataConfig(source=str(tmp_path / "tokens.pt"), val_fraction=0.1), d_vocab=64, n_ctx=16, seed=0)
    assert torch.equal(splits.train, tokens[:18]) and torch.equal(splits.val, tokens[18:])
    torch.save({"train": tokens[:5], "val": tokens[5:7]}, tmp_path / "dict.pt")
    assert load_tokens(DataConfig(source=str(tmp_path / "dict.pt")), 64, 16, 0).val.shape == (2, 16)

    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokens(DataConfig(source=str(tmp_path / "nope.pt")), 64, 16, 0)
    with pytest.raises(ValueError, match="d_vocab is 32"):
        load_tokens(DataConfig(source=str(tmp_path / "tokens.pt")), 32, 16, 0)
    with pytest.raises(ValueError, match="n_ctx=8"):
        load_tokens(DataConfig(source=str(tmp_path / "tokens.pt")), 64, 8, 0)
    torch.save(tokens.float(), tmp_path / "float.pt")
    with pytest.raises(ValueError, match="integer token tensor"):
        load_tokens(DataConfig(source=str(tmp_path / "float.pt")), 64, 16, 0)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="could not be read"):
        load_tokens(DataConfig(source=str(tmp_path / "junk.pt")), 64, 16, 0)


def test_corpus_source_goes_through_sparselens_data(tmp_path):
    """A folder of Python files, by name, through sparselens.data.load_corpus (offline, seconds)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(60):
        (corpus / f"mod{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + len('{'ab' * i}')\n" * 3)
    data = DataConfig(source=str(corpus), options=dict(cache_dir=str(tmp_path / "cache"), progress=False))
    splits = load_tokens(data, d_vocab=2048, n_ctx=32, seed=0)
    assert splits.train.shape[1] == 32 and splits.val.shape[0] >= 1 and len(splits.tokenizer) == 2048
    cfg = tiny_train_config(tmp_path / "run", model=dict(d_vocab=2048, n_ctx=32), data=data, n_steps=2, eval_batches=1)
    Trainer(cfg).train()
    saved = HookedSparseTransformer.from_pretrained(tmp_path / "run" / MODEL_DIR)
    assert saved.to_str_tokens("def f") == ["def", " f"]  # the corpus's tokenizer ships with the model
    with pytest.raises(FileNotFoundError):
        load_tokens(DataConfig(source=str(tmp_path / "no-such-corpus")), 2048, 32, 0)


def test_stdlib_source_goes_to_load_corpus_by_name(monkeypatch):
    import sparselens.data

    calls = []

    def fake_load_corpus(source, n_ctx, split, tokenizer, **options):
        calls.append((source, n_ctx, split, options))
        return torch.zeros(3, n_ctx, dtype=torch.long)

    monkeypatch.setattr(sparselens.data, "load_corpus", fake_load_corpus)
    load_tokens(DataConfig(source="stdlib", options=dict(progress=False)), 2048, 16, 0)
    assert calls == [("stdlib", 16, "train", dict(progress=False)), ("stdlib", 16, "val", dict(progress=False))]


def test_corpus_name_without_the_corpus_module_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sparselens.data", None)
    with pytest.raises(ValueError, match="needs the corpus module sparselens.data.load_corpus"):
        load_tokens(DataConfig(source="stdlib"), 2048, 16, 0)


def test_validation_stats_agree_with_the_activation_cache(tmp_path):
    trainer = Trainer(tiny_train_config(tmp_path, l0_target=0.25))
    trainer.train(stop_at=8)
    tokens = trainer.tokens.val[:8]
    stats = validation_stats(trainer.model, [tokens], trainer.sparsifier, trainer._autocast)
    loss, cache = trainer.model.run_with_cache(tokens, return_type="loss")
    assert stats["val_loss"] == pytest.approx(loss.item(), rel=1e-5)
    for layer in range(2):
        x = cache[f"blocks.{layer}.hook_resid_post"]
        c = x - x.mean(-1, keepdim=True)
        kurt = (c.pow(4).mean(-1) / c.pow(2).mean(-1).square()).mean()
        assert stats["kurtosis"][layer] == pytest.approx(kurt.item(), rel=1e-4)
        post = cache[f"blocks.{layer}.mlp.hook_post"]
        assert stats["dead_neurons"][layer] == int((post == 0).all(dim=0).all(dim=0).sum())
    for t in trainer.sparsifier.targets:
        assert stats["l0_actual"][t.name] == pytest.approx((t.param != 0).float().mean().item())
