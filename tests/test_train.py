"""The weight-sparse trainer: schedules, sparsity and floor per step, the step's order, data order."""

import math

import pytest
import torch

from sparselens import kernels
from sparselens.train import (
    BatchSampler,
    TrainConfig,
    Trainer,
    WeightSparsifier,
    l0_fraction,
    learning_rate,
    normalize_grad_rms_,
    synthetic_tokens,
)
from sparselens.train.sparsifier import SparseTarget


def tiny_train_config(out_dir, **overrides) -> TrainConfig:
    """A run that trains in well under a second per few steps."""
    model = dict(n_layers=2, d_model=32, d_head=8, n_ctx=16, d_vocab=64, seed=0)
    model.update(overrides.pop("model", {}))
    kwargs = dict(
        model=model,
        data=dict(source="synthetic", synthetic_sequences=64),
        n_steps=8,
        batch_size=8,
        lr=1e-2,
        l0_target=0.05,
        anneal_end=0.75,
        out_dir=str(out_dir),
        log_every=2,
        eval_every=1000,
        eval_batches=1,
        checkpoint_every=0,
        plot=False,
        progress=False,
        device="cpu",
    )
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


# ---------------------------------------------------------------- schedules
def test_l0_schedule_matches_hand_computed_values():
    # n_steps 1000, target 1/16: dense up to progress 0.01, linear to 1/16 at 0.5, then flat.
    f = lambda s: l0_fraction(s, 1000, 0.0625)  # noqa: E731
    assert f(0) == 1.0 and f(10) == 1.0
    assert f(255) == pytest.approx(1 - 0.9375 * (0.245 / 0.49))  # half-way: 0.53125
    assert f(255) == pytest.approx(0.53125)
    assert f(500) == 0.0625 and f(999) == 0.0625
    assert l0_fraction(30, 100, 0.5, anneal_start=0.2, anneal_end=0.4) == pytest.approx(0.75)


def test_sharkfin_lr_matches_hand_computed_values():
    lr = lambda s: learning_rate(s, 1000, 0.01, 0.0625)  # noqa: E731
    # warmup is ceil(1% of 1000) = 10 steps; step index 4 is the 5th step
    assert lr(4) == pytest.approx(0.01 * (5 / 10) * (1 - 4 / 1000) * math.sqrt(0.0625 / 1.0))
    assert lr(255) == pytest.approx(0.01 * 1.0 * (1 - 0.255) * math.sqrt(0.0625 / 0.53125))
    assert lr(600) == pytest.approx(0.01 * 0.4)  # L0 at target: the sqrt factor is 1
    assert lr(999) == pytest.approx(0.01 * 0.001)
    # the dense baseline has no sqrt factor: plain warmup + linear decay
    assert learning_rate(255, 1000, 0.01, 1.0) == pytest.approx(0.01 * 0.745)


# ---------------------------------------------------------------- the sparsifier's conventions
def test_sparsifier_targets_and_floor_dims(tiny_model):
    sparsifier = WeightSparsifier(tiny_model, floor=4)
    dims = {t.name: t.floor_dim for t in sparsifier.targets}
    assert dims["blocks.0.attn.q_proj.weight"] == 0 and dims["blocks.1.mlp.fc_in.weight"] == 0
    assert dims["blocks.0.attn.o_proj.weight"] == 1 and dims["blocks.1.mlp.fc_out.weight"] == 1
    assert dims["embed.W_E"] == 0 and dims["unembed.weight"] == 0
    assert not any(name.endswith((".bias", "b_U", ".w")) for name in dims)
    with_biases = {t.name for t in WeightSparsifier(tiny_model, sparsify_biases=True).targets}
    assert "blocks.0.mlp.fc_in.bias" in with_biases and "unembed.b_U" in with_biases


def test_sparsifier_rejects_an_unknown_parameter(tiny_model):
    tiny_model.extra = torch.nn.Parameter(torch.ones(3, 3))
    with pytest.raises(ValueError, match="extra"):
        WeightSparsifier(tiny_model)


def test_expected_nonzeros_is_k_or_the_floor():
    target = SparseTarget("w", torch.nn.Parameter(torch.randn(10, 20)), floor=4, floor_dim=1)
    assert target.n_keep(0.5) == 100 and target.n_protected() == 20 * 4
    assert target.expected_nonzeros(0.5) == 100
    assert target.expected_nonzeros(0.01) == 80  # k = 2 is below the floor's 80


# ---------------------------------------------------------------- sparsity after every step
@pytest.mark.parametrize("sparsify_biases", [False, True])
def test_every_step_leaves_the_scheduled_nonzeros_and_the_floor(tmp_path, sparsify_biases):
    cfg = tiny_train_config(tmp_path, sparsify_biases=sparsify_biases, n_steps=10)
    trainer = Trainer(cfg)
    with torch.no_grad():  # biases start at zero; give them values so that every kept entry is nonzero
        for name, p in trainer.model.named_parameters():
            if name.endswith(("bias", "b_U")):
                p.uniform_(-0.1, 0.1)
    floor_binding = 0
    for _ in range(cfg.n_steps):
        trainer.train_step(trainer._batch(trainer.step))
        l0 = trainer.l0_at(trainer.step - 1)
        for t in trainer.sparsifier.targets:
            nnz = int((t.param != 0).sum())
            assert nnz == t.expected_nonzeros(l0), (trainer.step, t.name, l0)
            floor_binding += t.n_keep(l0) < t.n_protected()
            if t.floor:
                per_slice = (t.param != 0).sum(dim=1 - t.floor_dim)
                assert int(per_slice.min()) >= min(t.floor, t.param.shape[1 - t.floor_dim]), (trainer.step, t.name)
    assert trainer.l0_at(cfg.n_steps - 1) == cfg.l0_target
    assert floor_binding > 0  # the run exercised both regimes: k above and below the floor


def test_dense_baseline_keeps_every_weight(tmp_path):
    trainer = Trainer(tiny_train_config(tmp_path, l0_target=1.0, n_steps=4))
    trainer.train(stop_at=4)
    for t in trainer.sparsifier.targets:
        assert bool((t.param != 0).all()), t.name


# ---------------------------------------------------------------- the step's order
def test_gradient_rms_normalisation():
    params = [torch.nn.Parameter(torch.zeros(5, 7)), torch.nn.Parameter(torch.zeros(11))]
    grads = [torch.randn(5, 7) * 3, torch.randn(11) * 0.1]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    rms = normalize_grad_rms_(params)
    expected_rms = torch.sqrt(sum((g**2).sum() for g in grads) / 46)
    assert rms.item() == pytest.approx(expected_rms.item(), rel=1e-6)
    after = torch.cat([p.grad.flatten() for p in params])
    assert after.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-6)
    for p, g in zip(params, grads):
        torch.testing.assert_close(p.grad * rms, g)


def test_adam_sees_gradients_of_rms_one(tmp_path):
    trainer = Trainer(tiny_train_config(tmp_path))
    seen = []
    original = trainer.optimizer.step

    def spy(*args, **kwargs):
        grads = torch.cat([p.grad.flatten() for p in trainer._params])
        seen.append(grads.pow(2).mean().sqrt().item())
        return original(*args, **kwargs)

    trainer.optimizer.step = spy
    for _ in range(3):
        trainer.train_step(trainer._batch(trainer.step))
    assert seen == pytest.approx([1.0] * 3, rel=1e-5)


def test_one_step_matches_the_method_written_out(tmp_path):
    """Step 1 by hand: grad / RMS, Adam's first update, top-k mask with floor, then decay."""
    cfg = tiny_train_config(tmp_path, n_steps=4, anneal_start=0.0, anneal_end=0.25, warmup=0.5, weight_decay=0.3)
    trainer = Trainer(cfg)
    tokens = trainer._batch(0)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model(tokens, return_type="loss").backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    rms = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()) / sum(g.numel() for g in grads.values()))
    trainer.step = 2  # step index 2 of 4 (past the anneal), with a fresh optimizer: Adam's first update
    lr, l0 = trainer.lr_at(2), trainer.l0_at(2)
    assert l0 == cfg.l0_target and lr == pytest.approx(cfg.lr * 1.0 * (1 - 2 / 4) * 1.0)

    trainer.train_step(tokens)

    targets = {t.name: t for t in trainer.sparsifier.targets}
    for name, p in model.named_parameters():
        g = (grads[name].double() / rms).float()
        # Adam's first step: m_hat = g, v_hat = g^2 -> update lr * g / (|g| + eps)
        expected = before[name] - lr * g / (g.abs() + cfg.adam_eps)
        if name in targets:
            t = targets[name]
            mask = kernels.weight_topk_mask(expected, t.n_keep(l0), floor=t.floor, floor_dim=t.floor_dim)
            expected = expected * mask
        if p.dim() >= 2:
            expected = expected * (1 - lr * cfg.weight_decay)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)


def test_step_path_never_reads_values_back_to_the_host(tmp_path, monkeypatch):
    """On CPU a read-back costs nothing, so catch it by name: no item/tolist/bool/float/int/index in a step."""
    trainer = Trainer(tiny_train_config(tmp_path))
    tokens = trainer._batch(0)
    trainer.train_step(tokens)  # creates the optimizer state

    def forbidden(self, *args, **kwargs):
        raise AssertionError("host sync in the step path")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, method, forbidden)
    loss = trainer.train_step(tokens)
    monkeypatch.undo()
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- data order
def test_batches_are_a_function_of_the_step_and_shard_across_ranks():
    tokens = synthetic_tokens(10, 6, 50, seed=3)
    whole = BatchSampler(tokens, batch_size=4, seed=1)
    halves = [BatchSampler(tokens, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        torch.testing.assert_close(torch.cat([h.batch(step) for h in halves]), whole.batch(step))
    # 5 steps of 4 = two epochs of 10: each epoch visits every sequence once
    indices = torch.cat([whole.global_indices(s) for s in range(5)])
    assert sorted(indices[:10].tolist()) == list(range(10)) and sorted(indices[10:].tolist()) == list(range(10))
    assert indices[:10].tolist() != indices[10:].tolist()  # reshuffled per epoch
    torch.testing.assert_close(BatchSampler(tokens, 4, seed=1).batch(3), whole.batch(3))
    with pytest.raises(ValueError, match="divisible"):
        BatchSampler(tokens, batch_size=4, seed=1, rank=0, world_size=3)


def test_synthetic_stream_is_deterministic_and_learnable(tmp_path):
    a, b = synthetic_tokens(4, 8, 30, seed=5), synthetic_tokens(4, 8, 30, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, synthetic_tokens(4, 8, 30, seed=5, stream=1))
    trainer = Trainer(tiny_train_config(tmp_path, n_steps=60, l0_target=1.0, lr=3e-2))
    start = trainer.evaluate()["val_loss"]
    trainer.train(stop_at=60)
    assert trainer.evaluate()["val_loss"] < start - 1.0
