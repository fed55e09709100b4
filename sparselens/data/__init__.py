"""Data: the shipped Python tokenizer and packed pretraining corpora.

Examples:
    >>> from sparselens.data import load_tokenizer, load_corpus, iter_batches
    >>> tok = load_tokenizer()                       # 2048 tokens, <|endoftext|> = 2047
    >>> train = load_corpus(n_ctx=256, split="train")  # the standard library's .py files
    >>> batch = next(iter_batches(train, batch_size=16, seed=0))  # LongTensor [16, 256]
"""

from sparselens.data.corpus import document_split, iter_batches, load_corpus, load_documents, stdlib_dir
from sparselens.data.tokenizer_io import EOT, TOKENIZER_DIR, load_tokenizer

__all__ = [
    "EOT",
    "TOKENIZER_DIR",
    "document_split",
    "iter_batches",
    "load_corpus",
    "load_documents",
    "load_tokenizer",
    "stdlib_dir",
]
