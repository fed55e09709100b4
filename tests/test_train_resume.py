"""Checkpoints: an interrupted + resumed run equals an uninterrupted one bit for bit; bad checkpoints."""

import json

import pytest
import torch
from test_train import tiny_train_config

from sparselens import HookedSparseTransformer
from sparselens.errors import CheckpointError, InputError
from sparselens.train import Trainer, TrainingDivergedError
from sparselens.train.trainer import CHECKPOINT_FILE, METRICS_FILE, NONFINITE_CHECKPOINT_FILE


def run_config(out_dir, **overrides):
    # the L0 anneals over the whole run, so the schedule moves at every step around the checkpoint
    kwargs = dict(n_steps=9, anneal_start=0.0, anneal_end=1.0, checkpoint_every=3, log_every=2, eval_every=4)
    kwargs.update(overrides)
    return tiny_train_config(out_dir, **kwargs)


def interrupt_at(trainer: Trainer, step: int) -> None:
    """Make the forward of step ``step`` (1-based) raise, as a crash between checkpoints would."""

    def crash(activation, hook):
        if trainer.step == step - 1:
            raise KeyboardInterrupt("simulated crash")

    trainer.model.add_hook("hook_embed", crash)


def assert_same_run(a: Trainer, b: Trainer) -> None:
    assert a.step == b.step
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for index in oa:
        for key in oa[index]:
            assert torch.equal(oa[index][key], ob[index][key]), (index, key)


def records(out_dir):
    """The metrics, without the wall-clock field (the only thing a resumed run may log differently)."""
    out = [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]
    for record in out:
        assert record.pop("seconds_per_step", 1.0) > 0
    return out


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    whole = Trainer(run_config(tmp_path / "whole"))
    whole.train()

    first = Trainer(run_config(tmp_path / "split"))
    interrupt_at(first, 5)  # after the checkpoint at step 3 and a train record at step 4
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert first.step == 4
    resumed = Trainer(run_config(tmp_path / "split"), resume=True)
    assert resumed.step == 3
    resumed.train()

    assert_same_run(whole, resumed)
    strip = lambda rs: [{k: v for k, v in r.items()} for r in rs]  # noqa: E731
    assert strip(records(tmp_path / "whole")) == strip(records(tmp_path / "split"))
    final = HookedSparseTransformer.from_pretrained(tmp_path / "split" / "model")
    for name, value in final.state_dict().items():
        assert torch.equal(value, whole.model.state_dict()[name]), name


def test_stop_at_checkpoints_and_resume_continues_exactly(tmp_path):
    whole = Trainer(run_config(tmp_path / "whole", checkpoint_every=0))
    whole.train()
    first = Trainer(run_config(tmp_path / "split", checkpoint_every=0))
    first.train(stop_at=5)  # odd step: the loss window of the next train record is half full
    assert (tmp_path / "split" / CHECKPOINT_FILE).exists() and not (tmp_path / "split" / "model").exists()
    resumed = Trainer(run_config(tmp_path / "split", checkpoint_every=0), resume=tmp_path / "split" / CHECKPOINT_FILE)
    resumed.train()
    assert_same_run(whole, resumed)
    assert records(tmp_path / "whole") == records(tmp_path / "split")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(run_config(tmp_path))
    trainer.train(stop_at=3)
    path = tmp_path / CHECKPOINT_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Trainer(run_config(tmp_path), resume=True)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Trainer(run_config(tmp_path), resume=True)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="not a sparselens training checkpoint"):
        Trainer(run_config(tmp_path), resume=True)
    with pytest.raises(CheckpointError, match="no training checkpoint"):
        Trainer(run_config(tmp_path / "elsewhere"), resume=True)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    Trainer(run_config(tmp_path)).train(stop_at=3)
    with pytest.raises(CheckpointError, match="d_model"):
        Trainer(run_config(tmp_path, model=dict(d_model=48)), resume=True)


def test_nan_loss_stops_naming_the_step_after_saving_a_checkpoint(tmp_path):
    trainer = Trainer(run_config(tmp_path, log_every=4, checkpoint_every=0))
    trainer.train(stop_at=3)  # a good checkpoint at step 3, the only one

    def poison(activation, hook):
        if trainer.step == 4:  # the forward of step 5
            return activation * float("nan")

    trainer.model.add_hook("hook_embed", poison)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train()
    message = str(info.value)
    assert "became nan at step 5 of 9" in message
    assert str(tmp_path / NONFINITE_CHECKPOINT_FILE) in message and "(step 3)" in message
    assert trainer.step == 8  # noticed at the next train record, without a per-step sync
    saved = torch.load(tmp_path / NONFINITE_CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == 8
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["step"] == 3


def test_init_starts_a_fine_tune_from_a_saved_model(tmp_path):
    """init: the run starts from the saved weights exactly, a resumed fine-tune continues from its
    checkpoint (not from init again), and an architecture mismatch or a missing model is refused."""
    first = Trainer(tiny_train_config(tmp_path / "first", n_steps=6))
    first.train()
    saved = tmp_path / "first" / "model"
    cfg = tiny_train_config(tmp_path / "tune", n_steps=4, init=str(saved), anneal_start=0.0, anneal_end=0.0, seed=3)
    tune = Trainer(cfg)
    source = HookedSparseTransformer.from_pretrained(saved)
    for name, p in tune.model.named_parameters():
        assert torch.equal(p, source.get_parameter(name)), name
    tune.train(stop_at=2)
    resumed = Trainer(cfg, resume=True)
    assert resumed.step == 2
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, tune.model.get_parameter(name)), name
    resumed.train()
    assert resumed.current_l0 == cfg.l0_target
    with pytest.raises(InputError, match="another architecture.*d_model"):
        Trainer(tiny_train_config(tmp_path / "bad", init=str(saved), model=dict(d_model=64)))
    with pytest.raises((CheckpointError, FileNotFoundError)):
        Trainer(tiny_train_config(tmp_path / "missing", init=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="init must name"):
        tiny_train_config(tmp_path / "empty", init="")
