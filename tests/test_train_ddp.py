"""Data parallelism: 2 CPU processes (gloo) reach the weights of 1 process with the same global batch."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_train import tiny_train_config

from sparselens.train import Trainer
from sparselens.train.trainer import METRICS_FILE


def ddp_config(out_dir):
    # batch 8 = 2 ranks x 4 sequences; the L0 anneals during the run so the sparsifier prunes every step
    return tiny_train_config(out_dir, n_steps=6, anneal_start=0.0, anneal_end=0.5, log_every=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        trainer = Trainer(ddp_config(out_dir))
        assert trainer.sampler.batch(0).shape[0] == 4
        trainer.train()
        torch.save(trainer.model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _train_losses(out_dir):
    lines = (out_dir / METRICS_FILE).read_text().splitlines()
    return [r["train_loss"] for r in map(json.loads, lines) if r["event"] == "train"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo")
def test_two_gloo_ranks_match_one_process(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(ddp_dir)), nprocs=2, join=True)

    single = Trainer(ddp_config(single_dir))
    single.train()

    rank0 = torch.load(ddp_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_dir / "rank1.pt", weights_only=True)
    reference = single.model.state_dict()
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), f"ranks diverged in {name}"
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-6, msg=name)
    # the pruned patterns agree too (a sparsifier out of sync would show up here first)
    for t in single.sparsifier.targets:
        assert torch.equal(rank0[t.name] != 0, reference[t.name] != 0), t.name
    assert _train_losses(ddp_dir) == pytest.approx(_train_losses(single_dir), rel=1e-5)
