"""Rebuild the shipped 2048-token byte-level BPE for Python source.

The tokenizer in ``sparselens/data/tokenizer/`` was made by::

    python -m sparselens.data.build_tokenizer

which trains on the ``.py`` files of the running Python's standard library that fall in the corpus
*train* split (the split is a hash of each file's path, see :mod:`sparselens.data.corpus`), read in
sorted order. The build is deterministic: the same files give byte-identical ``tokenizer.json``.
The shipped files came from CPython 3.11.7; another Python version has a slightly different standard
library and so gives a slightly different (equally good) tokenizer.

Design:

* 2047 learned tokens (the 256 byte tokens plus 1791 merges), then ``<|endoftext|>`` appended as id
  2047, matching the released models of the weight-sparse circuits paper. ``<|endoftext|>`` is the
  BOS, EOS, pad and unk token.
* Pre-tokenization (:data:`PRETOKENIZE_PATTERN`) is GPT-2's idea adapted to Python: a newline
  together with the next line's indentation is one piece (so ``"\\n        "`` can become one token
  and line-initial keywords carry no leading space), identifiers may contain ``_``, words, numbers
  and runs of punctuation carry at most one leading space (``" as"``, ``" =="``, ``"]]"``, ``"):"``).
  No merge ever crosses a piece boundary.
* The answer tokens of the built-in Python tasks (:data:`REQUIRED_TOKENS`) must be single tokens.
  Frequency alone leaves a few of them split (``" enumerate"``, ``"]]"``), so training counts each
  of them :data:`PRIME_COUNT` extra times (each is fed to the trainer as its own tiny text, so the
  extra counts go to that exact piece and nothing else). The build fails if any stays split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from sparselens.data.tokenizer_io import EOT, TOKENIZER_DIR

#: Pieces that BPE merges never cross, tried in order at each position.
PRETOKENIZE_PATTERN = (
    r"\r?\n[ \t]*"  # a newline and the indentation of the next line
    r"| ?[\p{L}_][\p{L}\p{N}_]*"  # identifiers and words, with at most one leading space
    r"| ?\p{N}+"  # digit runs
    r"| ?[^\s\p{L}\p{N}_]+"  # punctuation/operator runs: ":", " ==", "]]", "):"
    r"|[^\S\r\n]+(?!\S)"  # spaces not followed by a word (the last space joins the next piece)
    r"|\s+"  # anything else
)


#: Task answer tokens that the shipped tokenizer must hold as single tokens (pre-tokenized pieces).
REQUIRED_TOKENS = (
    '"', "'", "=", "):", ".", " +=", " as", ":", ",", "r", "w", "]", "]]", " in", "}", ")", "(",
    " else", " ==", " =", " enumerate", " range", " True", " False",
    "\n    ", "\n        ", "\n            ", "\n                ",
)
#: Extra occurrences of each required token added to the training counts.
PRIME_COUNT = 5000


def make_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer: split by :data:`PRETOKENIZE_PATTERN`, then map bytes to GPT-2's alphabet."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_tokenizer(
    files: Iterable[Path],
    vocab_size: int = 2048,
    required: Sequence[str] = REQUIRED_TOKENS,
    prime_count: int = PRIME_COUNT,
    show_progress: bool = True,
) -> Tokenizer:
    """Train a byte-level BPE on text files (read in sorted order) with ``<|endoftext|>`` last.

    Args:
        files: UTF-8 text files; ones that do not decode are skipped.
        vocab_size: total size including ``<|endoftext|>`` (at least 258: 256 bytes, a merge, EOT).
        required: pieces that must end up single tokens (each must be one pre-tokenized piece).
        prime_count: extra training occurrences of each required piece.
        show_progress: show the trainer's progress bar.

    Returns:
        A ``tokenizers.Tokenizer`` with exactly ``vocab_size`` tokens and ``<|endoftext|>`` at
        id ``vocab_size - 1``.
    """
    if vocab_size < 258:
        raise ValueError(f"vocab_size must be at least 258 (256 bytes + 1 merge + {EOT}), got {vocab_size}")
    paths = sorted(Path(f) for f in files)
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    if not texts:
        raise ValueError(f"no readable UTF-8 text among the {len(paths)} files given to train the tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = make_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=show_progress,
    )
    primer = [piece for piece in required for _ in range(prime_count)]
    tokenizer.train_from_iterator(texts + primer, trainer=trainer, length=len(texts) + len(primer))
    tokenizer.add_special_tokens([EOT])
    if tokenizer.get_vocab_size() != vocab_size or tokenizer.token_to_id(EOT) != vocab_size - 1:
        raise RuntimeError(
            f"training produced {tokenizer.get_vocab_size()} tokens with {EOT} at "
            f"{tokenizer.token_to_id(EOT)}; the corpus is too small for {vocab_size} tokens"
        )
    split = {p: tokenizer.encode(p).tokens for p in required if len(tokenizer.encode(p).ids) != 1}
    if split:
        raise RuntimeError(f"required tokens ended up split: {split}; raise prime_count (now {prime_count})")
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> Path:
    """Save as a ``transformers`` fast tokenizer directory.

    Writes ``tokenizer.json``, ``tokenizer_config.json`` (class ``PreTrainedTokenizerFast``, which
    transformers 4 and 5 both load) and ``special_tokens_map.json``.
    """
    from transformers import PreTrainedTokenizerFast

    specials = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")
    return out_dir


def stdlib_train_files() -> list[Path]:
    """The standard library ``.py`` files in the corpus train split, sorted."""
    from sparselens.data.corpus import document_split, list_text_files, stdlib_dir

    root = stdlib_dir()
    return [p for p in list_text_files(root, (".py",)) if document_split(p.relative_to(root).as_posix()) == "train"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparselens.data.build_tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TOKENIZER_DIR, help=f"output directory (default: {TOKENIZER_DIR})")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("files", nargs="*", type=Path, help="train on these files instead of the standard library")
    args = parser.parse_args(argv)
    files = args.files or stdlib_train_files()
    tokenizer = train_tokenizer(files, vocab_size=args.vocab_size)
    out = save_tokenizer(tokenizer, args.out)
    print(f"trained on {len(files)} files; wrote {tokenizer.get_vocab_size()} tokens to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
