"""Token sources and a deterministic batch order for training.

A source yields :class:`TokenSplits`: packed token tensors ``[n_seq, n_ctx]`` for training and
validation. :class:`BatchSampler` makes the global batch of every step a pure function of
``(seed, step)``, so a resumed run sees exactly the batches an uninterrupted one would, and every
data-parallel rank takes its own contiguous share of the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from jaxtyping import Int
from torch import Tensor

from sparselens.train.config import DataConfig

SYNTHETIC = "synthetic"


@dataclass
class TokenSplits:
    """Packed token sequences.

    Attributes:
        train: ``[n_train, seq_len]`` integer token ids.
        val: ``[n_val, seq_len]`` integer token ids.
        tokenizer: the tokenizer that made them, when known (the trainer saves it with the model).
    """

    train: Int[Tensor, "n_train seq_len"]
    val: Int[Tensor, "n_val seq_len"]
    tokenizer: Any = None

    def check(self, d_vocab: int, n_ctx: int, source: str) -> "TokenSplits":
        """Raise ``ValueError`` naming ``source`` unless both splits fit a model of this vocab/context."""
        for split, tokens in (("train", self.train), ("val", self.val)):
            if not isinstance(tokens, Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
                raise ValueError(f"{source}: the {split} split must be an integer token tensor, got {_describe(tokens)}")
            if tokens.dim() != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
                raise ValueError(
                    f"{source}: the {split} split must have shape [n_seq >= 1, seq_len >= 2], got {tuple(tokens.shape)}"
                )
            if tokens.shape[1] > n_ctx:
                raise ValueError(
                    f"{source}: sequences of {tokens.shape[1]} tokens do not fit the model's n_ctx={n_ctx}; "
                    "repack the data or raise model.n_ctx"
                )
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= d_vocab:
                raise ValueError(
                    f"{source}: {split} token ids span [{low}, {high}] but the model's d_vocab is {d_vocab}; "
                    "was the data tokenized with another tokenizer?"
                )
        if self.train.shape[1] != self.val.shape[1]:
            raise ValueError(f"{source}: train and val sequence lengths differ ({self.train.shape[1]} vs {self.val.shape[1]})")
        return self


def synthetic_tokens(n_seq: int, seq_len: int, d_vocab: int, seed: int, stream: int = 0) -> Int[Tensor, "n_seq seq_len"]:
    """A deterministic, learnable token stream: a random bigram language with two successors per token.

    Each token ``t`` is followed by ``successors[t, 0]`` or ``successors[t, 1]`` with equal
    probability, so the best achievable loss is ``log 2`` per token (after the first). The successor
    table depends only on ``seed``; the sequences on ``seed`` and ``stream`` (0: train, 1: val).
    """
    table_gen = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, d_vocab, (d_vocab, 2), generator=table_gen)
    gen = torch.Generator().manual_seed(seed * 7919 + 1 + stream)
    coins = torch.randint(0, 2, (n_seq, seq_len), generator=gen)
    tokens = torch.empty(n_seq, seq_len, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, d_vocab, (n_seq,), generator=gen)
    for pos in range(1, seq_len):
        tokens[:, pos] = successors[tokens[:, pos - 1], coins[:, pos]]
    return tokens


def load_tokens(data: DataConfig, d_vocab: int, n_ctx: int, seed: int) -> TokenSplits:
    """Resolve ``data.source`` into checked :class:`TokenSplits`.

    ``"synthetic"`` -> :func:`synthetic_tokens`; a path ending in ``.pt`` -> the packed tensors in
    that file; ``"stdlib"`` -> ``sparselens.data.load_corpus()`` (the standard library's ``.py``
    files); any other name (a folder, a hub data set) -> ``sparselens.data.load_corpus(name)``.
    ``data.options`` go to ``load_corpus`` (``extensions``, ``val_fraction``, ``cache_dir``, ...;
    ``tokenizer``: a saved tokenizer directory instead of the shipped one).
    """
    source = data.source
    if data.seq_len is not None:
        if data.seq_len > n_ctx:
            raise ValueError(f"data.seq_len={data.seq_len} is longer than the model's n_ctx={n_ctx}")
        n_ctx = data.seq_len
    if source == SYNTHETIC:
        n_val = max(1, data.synthetic_sequences // 8)
        splits = TokenSplits(
            train=synthetic_tokens(data.synthetic_sequences, n_ctx, d_vocab, seed),
            val=synthetic_tokens(n_val, n_ctx, d_vocab, seed, stream=1),
        )
    elif isinstance(source, str) and source.endswith(".pt"):
        splits = _load_pt(Path(source).expanduser(), data.val_fraction)
    else:
        splits = _load_corpus(source, n_ctx, data.options)
    return splits.check(d_vocab, n_ctx, f"data source {source!r}")  # n_ctx: the row length here


def _load_pt(path: Path, val_fraction: float) -> TokenSplits:
    if not path.is_file():
        raise FileNotFoundError(f"data source {str(path)!r}: no such file (expected packed tokens [n_seq, n_ctx])")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"data source {str(path)!r} could not be read as a torch file ({type(err).__name__}: {err})") from None
    if isinstance(obj, dict):
        if not {"train", "val"} <= obj.keys():
            raise ValueError(f"data source {str(path)!r} holds a dict with keys {sorted(obj)}; expected 'train' and 'val'")
        return TokenSplits(train=obj["train"], val=obj["val"])
    if not isinstance(obj, Tensor) or obj.dim() != 2:
        raise ValueError(f"data source {str(path)!r} must hold a tensor [n_seq, n_ctx], got {_describe(obj)}")
    if obj.shape[0] < 2:
        raise ValueError(f"data source {str(path)!r} has {obj.shape[0]} sequence(s); need at least 2 (train and val)")
    n_val = min(obj.shape[0] - 1, max(1, round(val_fraction * obj.shape[0])))
    return TokenSplits(train=obj[:-n_val], val=obj[-n_val:])


def _load_corpus(name: Union[str, list[str]], n_ctx: int, options: dict[str, Any]) -> TokenSplits:
    try:
        from sparselens.data import load_corpus, load_tokenizer
    except ImportError as err:
        raise ValueError(
            f"data source {name!r} is a corpus name, which needs the corpus module "
            f"sparselens.data.load_corpus; it could not be imported ({err}). Use source 'synthetic' or "
            "a .pt file of packed tokens [n_seq, n_ctx] instead."
        ) from None
    options = dict(options)
    tokenizer = load_tokenizer(options.pop("tokenizer", None))
    splits = {  # name: "stdlib", "pygen", a folder, a hub name, or a list of these (see load_corpus)
        split: load_corpus(name, n_ctx=n_ctx, split=split, tokenizer=tokenizer, **options) for split in ("train", "val")
    }
    return TokenSplits(train=splits["train"], val=splits["val"], tokenizer=tokenizer)


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"tensor of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return type(obj).__name__


class BatchSampler:
    """Global batch ``step`` = sequences ``perm_e[i % n_seq]`` for ``i`` in ``[step*B, (step+1)*B)``.

    ``perm_e`` is a random permutation of the training sequences for epoch ``e = i // n_seq``,
    seeded by ``(seed, e)``; a batch may straddle two epochs. Rank ``r`` of ``world_size`` takes
    rows ``[r*B/world_size, (r+1)*B/world_size)`` of the global batch.

    Args:
        tokens: training sequences ``[n_seq, seq_len]``.
        batch_size: global batch size ``B`` (divisible by ``world_size``).
        seed: seeds the epoch permutations.
        rank, world_size: this process's data-parallel position.
    """

    def __init__(self, tokens: Int[Tensor, "n_seq seq_len"], batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by the {world_size} data-parallel ranks; "
                "pick a batch_size that is a multiple of the number of processes"
            )
        self.tokens = tokens
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Int[Tensor, " n_seq"]:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(self.tokens.shape[0], generator=gen)
        return self._perms[epoch]

    def global_indices(self, step: int) -> Int[Tensor, " batch"]:
        """Sequence indices of the whole global batch of ``step`` (0-based)."""
        n_seq = self.tokens.shape[0]
        flat = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = flat // n_seq
        out = torch.empty_like(flat)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch)[flat[sel] % n_seq]
        return out

    def batch(self, step: int) -> Int[Tensor, "local_batch seq_len"]:
        """This rank's share of the global batch of ``step`` (on the CPU)."""
        share = self.batch_size // self.world_size
        return self.tokens[self.global_indices(step)[self.rank * share : (self.rank + 1) * share]]
