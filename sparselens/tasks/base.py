"""The task API: prompt pairs, batches, the paired binary loss and full-vocabulary cross-entropy.

A task yields *pairs* of prompts A and B that differ minimally and whose correct next tokens differ:
``target_a`` is right after A (and the alternative after B), ``target_b`` is right after B (and the
alternative after A). METHOD.md section 3 defines the losses.

Splits ``"train"``, ``"val"`` and ``"test"`` are disjoint by construction: every prompt text is
hashed to one split (70% / 15% / 15%), and a pair belongs to a split only when *both* its prompts
hash there; generation draws pairs and keeps those of the requested split. So no prompt can appear
in two splits, whatever the generator does. A task may add further splits (IOI's ``"ood"``) whose
prompts its generator makes disjoint by design.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

#: The hashed splits and their upper bounds on the prompt hash in [0, 1).
HASHED_SPLITS = {"train": 0.70, "val": 0.85, "test": 1.0}
LOSS_KINDS = ("binary", "ce")
REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class PromptPair:
    """Two prompts that differ minimally, and the single-token answer of each.

    Attributes:
        prompt_a, prompt_b: the prompts (text, without any BOS).
        target_a: the correct next token after A; the alternative after B.
        target_b: the correct next token after B; the alternative after A.
        suffix_a, suffix_b: the realistic rest of the snippet after the target (shown by
            ``sparselens tasks`` and used to check that the target is the token the tokenizer
            produces in context); never part of a batch.
    """

    prompt_a: str
    prompt_b: str
    target_a: str
    target_b: str
    suffix_a: str = ""
    suffix_b: str = ""


#: A generator makes one pair from a random state; it gets the split name (most ignore it).
Generator = Callable[[random.Random, str], PromptPair]


def prompt_split(prompt: str) -> str:
    """The hashed split (``"train"``, ``"val"`` or ``"test"``) that a prompt text belongs to."""
    u = int.from_bytes(hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest(), "big") / 2.0**64
    return next(name for name, upper in HASHED_SPLITS.items() if u < upper)


@dataclass
class TaskBatch:
    """A batch of ``n`` prompt pairs as ``2n`` rows: rows ``[0, n)`` are the A prompts and rows
    ``[n, 2n)`` the B prompts, so pair ``i`` is rows ``i`` and ``n + i``.

    Attributes:
        tokens: ``[2n, pos]`` token ids, each row the end-of-text token (if the task prepends it)
            followed by the prompt, padded with end-of-text on the ``padding_side``.
        read_pos: ``[2n]`` position of each row's last prompt token, whose logits predict the target.
        correct: ``[2n]`` id of the correct next token (``target_a`` for A rows, ``target_b`` for B).
        wrong: ``[2n]`` id of the alternative (``target_b`` for A rows, ``target_a`` for B).
        pairs: the ``n`` :class:`PromptPair` objects, in order.
        split: the split the pairs come from.
        padding_side: ``"right"`` (padding after the prompt, invisible to a causal model at
            ``read_pos``) or ``"left"``.
    """

    tokens: Int[Tensor, "row pos"]
    read_pos: Int[Tensor, " row"]
    correct: Int[Tensor, " row"]
    wrong: Int[Tensor, " row"]
    pairs: list[PromptPair] = field(repr=False)
    split: str = "train"
    padding_side: str = "right"

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    @property
    def prompts(self) -> list[str]:
        """The ``2n`` prompt texts in row order (all A, then all B)."""
        return [p.prompt_a for p in self.pairs] + [p.prompt_b for p in self.pairs]

    def select(self, pairs: Sequence[int] | Tensor) -> "TaskBatch":
        """The batch of the given pairs (rows ``i`` and ``n + i`` each), padding trimmed to fit them."""
        index = torch.as_tensor(pairs, dtype=torch.long).flatten()
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= self.n_pairs:
            raise IndexError(f"pair indices must be in [0, {self.n_pairs}) and not empty")
        rows = torch.cat([index, index + self.n_pairs])
        read_pos = self.read_pos[rows]
        # right padding: columns after the longest selected prompt are padding only (left: kept as is)
        tokens = self.tokens[rows, : int(read_pos.max()) + 1] if self.padding_side == "right" else self.tokens[rows]
        return TaskBatch(tokens, read_pos, self.correct[rows], self.wrong[rows], [self.pairs[i] for i in index.tolist()],
                         self.split, self.padding_side)

    def to(self, device: Any) -> "TaskBatch":
        """A copy with every tensor on ``device``."""
        return TaskBatch(
            self.tokens.to(device), self.read_pos.to(device), self.correct.to(device), self.wrong.to(device),
            self.pairs, self.split, self.padding_side,
        )


def logits_at_read_pos(
    logits: Float[Tensor, "row pos d_vocab"] | Float[Tensor, "row d_vocab"], batch: TaskBatch
) -> Float[Tensor, "row d_vocab"]:
    """The logits at each row's read position (passes ``[row, d_vocab]`` through unchanged)."""
    rows = batch.tokens.shape[0]
    if logits.shape[0] != rows:
        raise ValueError(f"logits have {logits.shape[0]} rows but the batch has {rows} prompts (2 per pair)")
    if logits.ndim == 2:
        return logits
    if logits.ndim != 3:
        raise ValueError(f"logits must be [row, pos, d_vocab] or [row, d_vocab], got shape {tuple(logits.shape)}")
    return logits[torch.arange(rows, device=logits.device), batch.read_pos.to(logits.device)]


def per_prompt_loss(
    logits: Float[Tensor, "row d_vocab"], correct: Int[Tensor, " row"], wrong: Int[Tensor, " row"], kind: str = "binary"
) -> Float[Tensor, " row"]:
    """Loss of each prompt at its read position.

    ``"binary"``: ``-log softmax([l_correct, l_wrong])[0]`` = ``softplus(l_wrong - l_correct)``.
    ``"ce"``: full-vocabulary cross-entropy ``-log softmax(l)[correct]``.
    Half-precision logits are upcast to float32; float32/float64 keep their precision.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if kind == "binary":
        return F.softplus(logits.gather(-1, wrong[:, None]) - logits.gather(-1, correct[:, None])).squeeze(-1)
    if kind == "ce":
        return F.cross_entropy(logits, correct, reduction="none")
    raise ValueError(f"unknown loss kind {kind!r}; use one of {LOSS_KINDS}")


class Task:
    """A named source of prompt pairs with the paper's losses.

    Args:
        name: registry name, e.g. ``"single_double_quote"``.
        generator: ``generator(rng, split) -> PromptPair``; should give many distinct prompts.
        targets: every string a generated pair may use as ``target_a``/``target_b``; each must be
            one token for ``tokenizer`` or construction fails with a ValueError naming it.
        tokenizer: a Hugging Face tokenizer with an ``eos_token`` (default: the shipped one).
        description: one line for listings.
        extra_splits: splits besides train/val/test that the generator handles itself (it must
            keep them disjoint from the others by design, e.g. IOI's same-gender ``"ood"``).
        default_kind: the loss used when ``kind`` is not given (``"binary"`` or ``"ce"``).
        prepend_bos: start every prompt with the end-of-text token, as documents start in training.

    Examples:
        >>> task = get_task("single_double_quote")
        >>> batch = task.batch(n=64, split="test")       # tokens [128, pos]: 64 A rows, 64 B rows
        >>> loss = task.loss(model, batch)               # mean over pairs of the per-pair average
    """

    def __init__(
        self,
        name: str,
        generator: Generator,
        targets: Iterable[str],
        tokenizer: Any = None,
        *,
        description: str = "",
        extra_splits: Sequence[str] = (),
        default_kind: str = "binary",
        prepend_bos: bool = True,
    ):
        if tokenizer is None:
            from sparselens.data import load_tokenizer

            tokenizer = load_tokenizer()
        if default_kind not in LOSS_KINDS:
            raise ValueError(f"default_kind must be one of {LOSS_KINDS}, got {default_kind!r}")
        self.name = name
        self.description = description
        self.generator = generator
        self.tokenizer = tokenizer
        self.default_kind = default_kind
        self.prepend_bos = prepend_bos
        self.splits = tuple(HASHED_SPLITS) + tuple(extra_splits)
        self.eot_id = tokenizer.eos_token_id
        if self.eot_id is None:
            raise ValueError(f"task {name!r}: the tokenizer has no eos_token; tasks pad and start prompts with it")
        self.target_ids = {t: self.single_token_id(t) for t in sorted(set(targets))}
        self._check_in_context()

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self.target_ids)} targets, splits={self.splits})"

    # ------------------------------------------------------------------------------ construction checks
    def single_token_id(self, text: str) -> int:
        """The id of ``text``, which must be exactly one token; else a ValueError naming the task."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if len(ids) == 1 and ids[0] == unk and text != self.tokenizer.unk_token:
            raise ValueError(f"task {self.name!r}: target {text!r} is the unknown token for this tokenizer")
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(
                f"task {self.name!r}: target {text!r} is {len(ids)} tokens {pieces} with this tokenizer, not one. "
                "Use a tokenizer where it is a single token (the shipped sparselens.data.load_tokenizer() is one "
                "for the Python tasks) or a task whose targets are."
            )
        return ids[0]

    def _check_in_context(self, n: int = 8) -> None:
        """Check that each target is the token the tokenizer actually produces after its prompt."""
        rng = random.Random(f"{self.name}/check")
        for _ in range(n):
            pair = self.generator(rng, "train")
            for prompt, target, suffix in ((pair.prompt_a, pair.target_a, pair.suffix_a), (pair.prompt_b, pair.target_b, pair.suffix_b)):
                if target not in self.target_ids:
                    raise ValueError(f"task {self.name!r}: the generator made target {target!r}, not among the declared targets")
                head = self.tokenizer.encode(prompt, add_special_tokens=False) + [self.target_ids[target]]
                full = self.tokenizer.encode(prompt + target + suffix, add_special_tokens=False)
                if full[: len(head)] != head:
                    raise ValueError(
                        f"task {self.name!r}: in context the tokenizer does not split {target!r} off after "
                        f"...{prompt[-40:]!r}: it gives {self.tokenizer.convert_ids_to_tokens(full[len(head) - 3 : len(head) + 1])} "
                        "around the target, so the prompt would not end where the model predicts the target"
                    )

    # ------------------------------------------------------------------------------------------ data
    def pairs(self, n: int = 64, split: str = "train", seed: int = 0) -> list[PromptPair]:
        """``n`` pairs of ``split``, reproducible from ``seed`` (repeats are possible in small tasks).

        Raises:
            ValueError: unknown split.
            RuntimeError: the generator is too narrow to fill the split.
        """
        if split not in self.splits:
            from sparselens.errors import closest_hint

            raise ValueError(f"task {self.name!r} has no split {split!r}{closest_hint(split, self.splits)}; splits: {self.splits}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[PromptPair] = []
        budget = 1000 * n + 10_000
        for _ in range(budget):
            if len(out) == n:
                return out
            pair = self.generator(rng, split)
            if split not in HASHED_SPLITS or prompt_split(pair.prompt_a) == split == prompt_split(pair.prompt_b):
                out.append(pair)
        if len(out) == n:
            return out
        raise RuntimeError(
            f"task {self.name!r}: found only {len(out)} of {n} pairs for split {split!r} in {budget} draws; "
            "the generator makes too few distinct prompts"
        )

    def batch(self, n: int = 64, split: str = "train", seed: int = 0, padding_side: str = "right") -> TaskBatch:
        """``n`` pairs as a :class:`TaskBatch` (tokens ``[2n, pos]``; A rows first, then B rows).

        Use a different ``seed`` per step for fresh training batches.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        pairs = self.pairs(n, split, seed)
        texts = [p.prompt_a for p in pairs] + [p.prompt_b for p in pairs]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        prefix = [self.eot_id] if self.prepend_bos else []
        rows = [prefix + ids for ids in encoded]
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), self.eot_id, dtype=torch.long)
        read_pos = torch.empty(len(rows), dtype=torch.long)
        for i, row in enumerate(rows):
            start = 0 if padding_side == "right" else width - len(row)
            tokens[i, start : start + len(row)] = torch.tensor(row)
            read_pos[i] = start + len(row) - 1
        ids_a = torch.tensor([self.target_ids[p.target_a] for p in pairs], dtype=torch.long)
        ids_b = torch.tensor([self.target_ids[p.target_b] for p in pairs], dtype=torch.long)
        return TaskBatch(tokens, read_pos, torch.cat([ids_a, ids_b]), torch.cat([ids_b, ids_a]), pairs, split, padding_side)

    def example(self, split: str = "train", seed: int = 0) -> PromptPair:
        """One pair, for display."""
        return self.pairs(1, split, seed)[0]

    def with_targets(self, target_a: str, target_b: str, name: Optional[str] = None) -> "RetargetedTask":
        """This task's prompts with other answers: ``target_a`` after every A prompt, ``target_b`` after every B.

        The pairs of every split and seed are this task's own (same prompts, same order); only the
        targets change (suffixes are dropped). Used for the nonsense control
        (:mod:`sparselens.faithfulness.controls`).

        Raises:
            ValueError: the targets are equal, not single tokens, or not split off after the prompts.
        """
        return RetargetedTask(self, target_a, target_b, name)

    # ---------------------------------------------------------------------------------------- losses
    def loss_from_logits(
        self,
        logits: Float[Tensor, "row pos d_vocab"] | Float[Tensor, "row d_vocab"],
        batch: TaskBatch,
        kind: Optional[str] = None,
        reduction: str = "mean",
    ) -> Tensor:
        """Task loss from logits of a (possibly hooked or masked) run on ``batch.tokens``.

        Per pair we AVERAGE the two prompts' losses: ``(loss_A + loss_B) / 2``. The paper's stored
        numbers are the SUM over the pair, i.e. twice ours.

        Args:
            logits: ``[2n, pos, d_vocab]`` (read at ``batch.read_pos``) or ``[2n, d_vocab]``.
            batch: the batch the logits came from.
            kind: ``"binary"`` (``-log softmax([l_t, l_alt])`` of the correct one, METHOD.md 3) or
                ``"ce"`` (full-vocabulary cross-entropy); default ``self.default_kind``.
            reduction: ``"mean"`` over pairs (scalar), ``"sum"`` over pairs, or ``"none"`` (``[n]``).

        Returns:
            A float tensor: scalar, or ``[n_pairs]`` with ``reduction="none"``.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; use one of {REDUCTIONS}")
        read = logits_at_read_pos(logits, batch)
        dev = read.device
        per_row = per_prompt_loss(read, batch.correct.to(dev), batch.wrong.to(dev), kind or self.default_kind)
        per_pair = per_row.view(2, -1).mean(0)
        if reduction == "none":
            return per_pair
        return per_pair.mean() if reduction == "mean" else per_pair.sum()

    def loss(self, model: Any, batch: TaskBatch, kind: Optional[str] = None, reduction: str = "mean",
             grad: bool = False) -> Tensor:
        """Run ``model`` on ``batch.tokens`` and return :meth:`loss_from_logits` (per-pair average).

        A loss to report, without a graph (``float(task.loss(...))`` warns about nothing); pass
        ``grad=True`` to train on it.
        """
        device = next(model.parameters()).device
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            logits = model(batch.tokens.to(device), return_type="logits")
            return self.loss_from_logits(logits, batch, kind, reduction)

    def accuracy_from_logits(
        self, logits: Float[Tensor, "row pos d_vocab"] | Float[Tensor, "row d_vocab"], batch: TaskBatch
    ) -> Tensor:
        """Fraction of prompts whose correct token outscores the alternative (scalar)."""
        read = logits_at_read_pos(logits, batch)
        dev = read.device
        return (read.gather(-1, batch.correct.to(dev)[:, None]) > read.gather(-1, batch.wrong.to(dev)[:, None])).float().mean()


class RetargetedTask(Task):
    """``source``'s prompts with every A prompt's answer ``target_a`` and every B prompt's ``target_b``.

    Made by :meth:`Task.with_targets`; the name defaults to ``"<source>:<target_a>/<target_b>"``.
    """

    def __init__(self, source: Task, target_a: str, target_b: str, name: Optional[str] = None):
        if target_a == target_b:
            raise ValueError(f"task {source.name!r}: the two new targets must differ, got {target_a!r} twice")
        self.source = source
        self.new_targets = (target_a, target_b)  # before the construction checks, which generate pairs
        super().__init__(
            name or f"{source.name}:{target_a}/{target_b}", lambda rng, split: self._retarget(source.generator(rng, split)),
            [target_a, target_b], source.tokenizer, description=f"{source.description} (targets {target_a!r}/{target_b!r})",
            extra_splits=source.splits[len(HASHED_SPLITS):], default_kind=source.default_kind,
            prepend_bos=source.prepend_bos,
        )

    def _retarget(self, pair: PromptPair) -> PromptPair:
        return PromptPair(pair.prompt_a, pair.prompt_b, *self.new_targets)

    def pairs(self, n: int = 64, split: str = "train", seed: int = 0) -> list[PromptPair]:
        """``source.pairs(n, split, seed)`` with the new targets."""
        return [self._retarget(p) for p in self.source.pairs(n, split, seed)]
