"""Write a small BPE in GPT-2's "data gym" format (encoder.json + vocab.bpe), as the released
``tinypython_2k`` tokenizer is stored, by training a byte-level BPE on some Python.

Written from the format's definition (tiktoken.load.data_gym_to_mergeable_bpe_ranks), not from
sparselens's reader: the 256 bytes get ranks 0..255 in GPT-2's byte-to-unicode order, then each
merge adds the next rank; ``encoder.json`` maps each token's byte-to-unicode string to its rank.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

EOT = "<|endoftext|>"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAIN_MODULES = ["textwrap.py", "argparse.py", "shlex.py", "json/encoder.py", "json/decoder.py", "string.py",
                 "glob.py", "fnmatch.py", "dataclasses.py", "heapq.py"]


def read_module(name: str) -> str:
    """The source of stdlib module file ``name`` (``"a/b.py"``), or of its package if it became one."""
    path = STDLIB / name
    if not path.exists():
        path = STDLIB / name.removesuffix(".py") / "__init__.py"
    return path.read_text(encoding="utf-8")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (encoder.py of openai/gpt-2)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_data_gym(folder: Path, pattern: str, vocab_size: int = 2048, modules=TRAIN_MODULES) -> Path:
    """Train a byte-level BPE of ``vocab_size`` tokens (``<|endoftext|>`` included, last) with
    pre-tokenizer regex ``pattern`` on stdlib ``modules``, and write it to ``folder`` in data-gym format."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([read_module(m) for m in modules], trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    encoder = {ch: rank for rank, ch in enumerate(bytes_to_unicode().values())}
    kept = []
    for merge in merges:
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        if a + b not in encoder:  # the trainer can reach a token twice; data gym ranks each once
            encoder[a + b] = len(encoder)
            kept.append((a, b))
    encoder[EOT] = len(encoder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in kept), encoding="utf-8")
    return folder


def tiktoken_encoding(folder: Path, pattern: str, eot_id: int, name: str = "tinypython_2k"):
    """The tiktoken encoding of a data-gym BPE, as the released code defines ``tinypython_2k``.

    Call with ``TIKTOKEN_CACHE_DIR=""``: tiktoken caches files by path otherwise.
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(folder / "vocab.bpe"),
                                            encoder_json_file=str(folder / "encoder.json"))
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={EOT: eot_id})
