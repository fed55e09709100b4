"""A weight-sparse model trained from scratch with bridges to a frozen dense model (TrainConfig.bridge)."""

import copy
import json

import pytest
import torch
import yaml
from conftest import randomize, tiny_config

from sparselens import HookedSparseTransformer
from sparselens.bridges import Bridges, bridge_losses
from sparselens.bridges.train import BRIDGES_DIR
from sparselens.errors import CheckpointError, InputError
from sparselens.train import TokenSplits, TrainConfig, Trainer, synthetic_tokens
from sparselens.train.trainer import CHECKPOINT_FILE, METRICS_FILE, MODEL_DIR

SMALL = dict(d_model=32, d_head=8, n_ctx=8, d_vocab=64)


def dense_model(seed=1):
    return randomize(HookedSparseTransformer(tiny_config(afrac=None, **SMALL)), seed=seed)


def splits():
    return TokenSplits(train=synthetic_tokens(32, 8, 64, 0), val=synthetic_tokens(8, 8, 64, 0, stream=1))


def config(tmp_path, name="run", **bridge):
    return TrainConfig(
        model=tiny_config(**SMALL), n_steps=6, batch_size=4, lr=1e-2, l0_target=0.25, device="cpu", bf16=False,
        out_dir=str(tmp_path / name), log_every=3, eval_every=3, eval_batches=1, checkpoint_every=2, plot=False,
        progress=False, bridge={"dense": "tiny-dense", **bridge},
    )


def records(out_dir):
    out = [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]
    for record in out:
        record.pop("seconds_per_step", None)
    return out


def test_the_step_minimises_the_lm_loss_plus_the_weighted_bridge_terms_and_logs_the_lm_loss(tmp_path):
    dense = dense_model()
    trainer = Trainer(config(tmp_path, weight=0.5), splits(), dense=dense)
    tokens = splits().train[:4]
    lm, total = trainer._bridged_loss(tokens, 0)
    terms = bridge_losses(dense, trainer.model, trainer.bridges, tokens, lm_loss=True)  # every site, unsampled
    by_hand = terms.nmse_enc.sum() + terms.nmse_dec.sum() + terms.kl_sparse.sum() + terms.kl_dense.sum()
    assert float(lm) == pytest.approx(float(trainer.model(tokens, return_type="loss")), rel=1e-6)
    assert float(total) == pytest.approx(float(lm + 0.5 * by_hand), rel=1e-5)


def test_sampled_kl_sites_are_scaled_to_an_unbiased_sum_and_drawn_from_the_step(tmp_path):
    dense = dense_model()
    trainer = Trainer(config(tmp_path, kl_sites_per_step=2), splits(), dense=dense)
    tokens = splits().train[:4]
    full = bridge_losses(dense, trainer.model, trainer.bridges, tokens, lm_loss=True)
    n_sites = trainer.bridges.cfg.n_sites
    seen = set()
    for step in range(6):
        gen = torch.Generator().manual_seed(step)  # the config's seed is 0
        chosen = torch.randperm(n_sites, generator=gen)[:2].tolist()
        seen.update(chosen)
        kl = full.kl_sparse[chosen].sum() + full.kl_dense[chosen].sum()
        want = full.lm + full.nmse_enc.sum() + full.nmse_dec.sum() + n_sites / 2 * kl
        assert float(trainer._bridged_loss(tokens, step)[1]) == pytest.approx(float(want), rel=1e-5)
    assert len(seen) > 2  # different steps draw different sites
    mean_over_pairs = []  # the scaled estimate averages to the full sum over all draws of 2 sites
    for i in range(n_sites):
        for j in range(i + 1, n_sites):
            mean_over_pairs.append(n_sites / 2 * float(full.kl_sparse[[i, j]].sum() + full.kl_dense[[i, j]].sum()))
    assert sum(mean_over_pairs) / len(mean_over_pairs) == pytest.approx(float(full.kl_sparse.sum() + full.kl_dense.sum()), rel=1e-5)


def test_site_weights_multiply_each_sites_nmse_and_kl_terms_sampled_or_not(tmp_path):
    dense = dense_model()
    weights = [3.0, 0.0, 1.0, 0.5, 2.0]  # tiny_config has 2 layers: 5 sites
    tokens = splits().train[:4]
    for sampled in (None, 2):
        trainer = Trainer(config(tmp_path, f"w{sampled}", weight=0.5, site_weights=weights, kl_sites_per_step=sampled),
                          splits(), dense=dense)
        full = bridge_losses(dense, trainer.model, trainer.bridges, tokens, lm_loss=True)
        n_sites = trainer.bridges.cfg.n_sites
        chosen = list(range(n_sites)) if sampled is None else torch.randperm(n_sites, generator=torch.Generator().manual_seed(1))[:2].tolist()
        by_hand = sum(weights[i] * float(full.nmse_enc[i] + full.nmse_dec[i]) for i in range(n_sites))
        by_hand += n_sites / len(chosen) * sum(weights[i] * float(full.kl_sparse[i] + full.kl_dense[i]) for i in chosen)
        assert float(trainer._bridged_loss(tokens, 1)[1]) == pytest.approx(float(full.lm) + 0.5 * by_hand, rel=1e-5)


def test_site_weights_per_term_weigh_only_the_terms_they_name(tmp_path):
    dense = dense_model()
    tokens = splits().train[:4]
    weights = {"nmse_enc": [0.0, 1, 1, 1, 1], "kl_sparse": [30.0, 1, 1, 1, 2]}  # nmse_dec and kl_dense keep 1
    trainer = Trainer(config(tmp_path, weight=0.1, site_weights=weights), splits(), dense=dense)
    full = bridge_losses(dense, trainer.model, trainer.bridges, tokens, lm_loss=True)
    by_hand = sum(weights["nmse_enc"][i] * float(full.nmse_enc[i]) + float(full.nmse_dec[i])
                  + weights["kl_sparse"][i] * float(full.kl_sparse[i]) + float(full.kl_dense[i]) for i in range(5))
    assert float(trainer._bridged_loss(tokens, 1)[1]) == pytest.approx(float(full.lm) + 0.1 * by_hand, rel=1e-5)


def test_site_weights_need_finite_non_negative_factors_per_site_and_known_terms(tmp_path):
    for bad in ([1.0, -1.0, 1, 1, 1], [0, 0, 0, 0, 0], [1, float("nan"), 1, 1, 1], [1, "x", 1, 1, 1], {"kl_sparse": [1, -1, 1, 1, 1]}):
        with pytest.raises(ValueError, match=r"bridge.site_weights (\(\w+\) must be finite numbers >= 0|are all 0)"):
            config(tmp_path, site_weights=bad)
    for bad in ([], "10", {}):
        with pytest.raises(ValueError, match="bridge.site_weights must be a list of factors, one per bridge site, or a mapping"):
            config(tmp_path, site_weights=bad)
    with pytest.raises(ValueError, match="unknown loss term 'kl_sprase'; did you mean 'kl_sparse'"):
        config(tmp_path, site_weights={"kl_sprase": [1, 1, 1, 1, 1]})
    with pytest.raises(InputError, match=r"a list of 5 factors, one per bridge site; got \[1, 1, 1\]; 2 layers have 5 bridge sites \(L0"):
        Trainer(config(tmp_path, site_weights=[1, 1, 1]), splits(), dense=dense_model())
    with pytest.raises(InputError, match=r"site_weights \(kl_dense\) must be a list of 5 factors"):
        Trainer(config(tmp_path, site_weights={"kl_dense": [1, 1]}), splits(), dense=dense_model())


def test_a_bridged_run_anneals_l0_keeps_the_dense_model_frozen_and_saves_bridges_for_the_trained_model(tmp_path):
    dense = dense_model()
    before = copy.deepcopy(dense.state_dict())
    trainer = Trainer(config(tmp_path, kl_sites_per_step=1), splits(), dense=dense)
    bridges_before = copy.deepcopy(trainer.bridges.state_dict())
    model = trainer.train()
    assert all(torch.equal(dense.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None and p.requires_grad for p in dense.parameters())
    assert any(not torch.equal(trainer.bridges.state_dict()[k], v) for k, v in bridges_before.items())
    for target in trainer.sparsifier.targets:  # the model is weight-sparse at the target L0 (plus the floor)
        assert (target.param != 0).float().mean() < 0.5, target.name
    evals = [r for r in records(tmp_path / "run") if r["event"] == "eval"]
    n_sites = trainer.bridges.cfg.n_sites
    assert all(len(r["val_bridge_kl_sparse_from_site"]) == n_sites and r["val_kl_pair"] > 0 for r in evals)
    saved = HookedSparseTransformer.from_pretrained(tmp_path / "run" / MODEL_DIR)
    loaded = Bridges.from_pretrained(tmp_path / "run" / BRIDGES_DIR, dense=dense, sparse=saved)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trainer.bridges.state_dict().items())
    assert torch.equal(saved(splits().val), model(splits().val))


def test_an_interrupted_bridged_run_resumes_to_the_same_model_bridges_and_metrics(tmp_path):
    dense = dense_model()
    whole = Trainer(config(tmp_path, "whole", kl_sites_per_step=2), splits(), dense=dense)
    whole.train()
    first = Trainer(config(tmp_path, "split", kl_sites_per_step=2), splits(), dense=dense)
    first.train(stop_at=4)
    with pytest.raises(CheckpointError, match="another dense model"):
        Trainer(config(tmp_path, "split", kl_sites_per_step=2), splits(), resume=True, dense=dense_model(seed=5))
    plain = TrainConfig(**{**config(tmp_path, "split").__dict__, "bridge": None})
    with pytest.raises(CheckpointError, match="trained with bridges"):
        Trainer(plain, splits(), resume=True)
    second = Trainer(config(tmp_path, "split", kl_sites_per_step=2), splits(), resume=True, dense=dense)
    assert second.step == 4
    second.train()
    for a, b in ((second.model, whole.model), (second.bridges, whole.bridges)):
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert records(tmp_path / "split") == records(tmp_path / "whole")
    assert (tmp_path / "split" / CHECKPOINT_FILE).is_file()


def test_bad_bridge_settings_are_refused_with_the_field(tmp_path):
    with pytest.raises(ValueError, match="bridge.dense must name"):
        config(tmp_path, dense="")
    with pytest.raises(ValueError, match="kl_sites_per_step must be a positive integer"):
        config(tmp_path, kl_sites_per_step=0)
    with pytest.raises(ValueError, match="did you mean 'weight'"):
        config(tmp_path, wieght=2.0)
    with pytest.raises(ValueError, match="same number of layers"):
        Trainer(config(tmp_path), splits(), dense=randomize(HookedSparseTransformer(tiny_config(afrac=None, n_layers=1, **SMALL))))


def test_sparselens_train_with_a_bridge_section_then_bridges_evaluate_read_the_run(tmp_path, capsys):
    from sparselens.cli import main

    dense_dir = dense_model().save_pretrained(tmp_path / "dense")
    config = dict(
        model={**SMALL, "n_layers": 2, "seed": 0}, data=dict(source="synthetic", synthetic_sequences=16), n_steps=3,
        batch_size=4, l0_target=0.5, device="cpu", out_dir=str(tmp_path / "run"), log_every=1, eval_every=3,
        eval_batches=1, checkpoint_every=0, plot=False, bridge=dict(dense=str(dense_dir), kl_sites_per_step=2),
    )
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    assert "sparselens bridges evaluate --bridges" in capsys.readouterr().out
    bridges_dir = tmp_path / "run" / BRIDGES_DIR
    assert main(["bridges", "evaluate", "--bridges", str(bridges_dir), "--n-seqs", "2", "--no-progress", "--device", "cpu"]) == 0
    assert "| final | `blocks.1.hook_resid_post` |" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "bridge": {"dense": str(tmp_path / "nowhere")}}))
    assert main(["train", "--config", str(tmp_path / "bad.yaml"), "--no-progress"]) != 0
    assert "nowhere" in capsys.readouterr().err


def test_a_bridged_fine_tune_starts_from_a_saved_model_and_its_bridges(tmp_path):
    """init: + bridge.init: the run goes on from a finished bridged run's model and bridges exactly;
    bridges made for another starting model are refused."""
    dense = dense_model()
    Trainer(config(tmp_path, "first", kl_sites_per_step=1), splits(), dense=dense).train()
    model_dir, bridges_dir = tmp_path / "first" / MODEL_DIR, tmp_path / "first" / BRIDGES_DIR
    tune_cfg = TrainConfig(**{**config(tmp_path, "tune", kl_sites_per_step=1, init=str(bridges_dir)).__dict__,
                              "init": str(model_dir), "anneal_start": 0.0, "anneal_end": 0.0})
    tune = Trainer(tune_cfg, splits(), dense=dense)
    saved = Bridges.from_pretrained(bridges_dir)
    assert all(torch.equal(tune.bridges.state_dict()[k], v) for k, v in saved.state_dict().items())
    start = HookedSparseTransformer.from_pretrained(model_dir)
    assert torch.equal(tune.model(splits().val), start(splits().val))
    tune.train()
    assert any(not torch.equal(tune.bridges.state_dict()[k], v) for k, v in saved.state_dict().items())
    fresh = TrainConfig(**{**config(tmp_path, "fresh", kl_sites_per_step=1, init=str(bridges_dir)).__dict__})  # no model init:
    with pytest.raises(InputError, match="made for a sparse model"):
        Trainer(fresh, splits(), dense=dense)
    with pytest.raises(ValueError, match="bridge.init must name"):
        config(tmp_path, init="")
