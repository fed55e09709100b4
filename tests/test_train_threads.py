"""Data parallelism over CPU threads (sparselens.train.thread_parallel) and the trainer's data_threads."""

import threading

import pytest
import torch
from conftest import randomize, tiny_config
from test_train import tiny_train_config

from sparselens import HookedSparseTransformer
from sparselens.errors import InputError
from sparselens.train import Trainer
from sparselens.train.thread_parallel import backward_in_threads


def whole_batch_gradients(model, tokens):
    """The reference: one forward and backward of the whole batch on this thread."""
    model.zero_grad(set_to_none=True)
    loss = model(tokens, return_type="loss")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("batch, n_threads", [(4, 2), (5, 3), (3, 3)])
def test_sharded_gradients_equal_the_whole_batch(batch, n_threads):
    model = randomize(HookedSparseTransformer(tiny_config(attn_sink=True, bigram_table=True)))
    tokens = torch.randint(0, 128, (batch, 32), generator=torch.Generator().manual_seed(batch))
    loss_ref, ref = whole_batch_gradients(model, tokens)
    params = list(model.parameters())
    all_shards_running = threading.Barrier(n_threads, timeout=30)  # broken unless the shards run at once

    def loss_fn(rows):
        all_shards_running.wait()
        return model(rows, return_type="loss")

    loss = backward_in_threads(loss_fn, tokens, params, n_threads)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sharded_gradients_are_deterministic_and_accumulate():
    model = randomize(HookedSparseTransformer(tiny_config()))
    tokens = torch.randint(0, 128, (6, 32), generator=torch.Generator().manual_seed(0))
    params = list(model.parameters())
    backward_in_threads(lambda t: model(t, return_type="loss"), tokens, params, 2)
    first = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    for _ in range(2):  # a second call adds to .grad, as backward() does
        backward_in_threads(lambda t: model(t, return_type="loss"), tokens, params, 2)
    for p, g in zip(params, first):
        assert torch.equal(p.grad, 2 * g)  # the same split gives the same bits, and x + x == 2x exactly


def test_thread_count_restored_and_shard_errors_raised():
    model = HookedSparseTransformer(tiny_config())
    tokens = torch.randint(0, 128, (4, 32))
    before = torch.get_num_threads()
    calls = []

    def failing(rows):
        calls.append(rows.shape[0])
        if len(calls) == 2:
            raise RuntimeError("shard failed")
        return model(rows, return_type="loss")

    with pytest.raises(RuntimeError, match="shard failed"):
        backward_in_threads(failing, tokens, list(model.parameters()), 2)
    assert torch.get_num_threads() == before
    backward_in_threads(lambda t: model(t, return_type="loss"), tokens, list(model.parameters()), 2)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_threads must be in"):
        backward_in_threads(failing, tokens, list(model.parameters()), 5)


def test_trainer_with_threads_follows_the_trainer_without(tmp_path):
    """Three steps with the batch split over 2 threads stay within rounding of the unsplit steps."""
    runs = {}
    for n in (1, 2):
        trainer = Trainer(tiny_train_config(tmp_path / str(n), data_threads=n, l0_target=0.5))
        assert trainer.data_threads == n
        for _ in range(3):
            trainer.train_step(trainer._batch(trainer.step))
        runs[n] = dict(trainer.model.named_parameters())
    for name, p in runs[1].items():
        torch.testing.assert_close(runs[2][name], p, rtol=1e-4, atol=1e-5, msg=name)


def test_data_threads_default_and_refusals(tmp_path):
    threads = torch.get_num_threads()
    assert Trainer(tiny_train_config(tmp_path / "a")).data_threads == min(threads, 8)
    assert Trainer(tiny_train_config(tmp_path / "b", batch_size=1)).data_threads == 1
    with pytest.raises(InputError, match="more than batch_size=8"):
        Trainer(tiny_train_config(tmp_path / "c", data_threads=9))
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="data_threads must be a positive integer"):
            tiny_train_config(tmp_path / "d", data_threads=bad)


def test_data_threads_refused_with_bridges(tmp_path):
    dense_dir = tmp_path / "dense"
    HookedSparseTransformer(tiny_config(d_model=32, d_head=8, n_ctx=16, d_vocab=64)).save_pretrained(dense_dir)
    cfg = tiny_train_config(tmp_path / "run", bridge={"dense": str(dense_dir)}, data_threads=2)
    with pytest.raises(InputError, match="does not apply with bridge"):
        Trainer(cfg)
    cfg = tiny_train_config(tmp_path / "run", bridge={"dense": str(dense_dir)})
    assert Trainer(cfg).data_threads == 1  # unset: the bridged step runs unsplit
