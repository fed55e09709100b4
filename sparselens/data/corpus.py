"""Pretraining corpora: documents -> tokens joined by ``<|endoftext|>`` -> ``[n_seq, n_ctx]``.

A *source* is one of:

* ``None`` or ``"stdlib"``: the ``.py`` files of the running Python's standard library (about
  30 MB of real Python, no download; ``site-packages`` is left out);
* ``"pygen"``: ``n_programs`` simple, varied Python programs from :mod:`sparselens.data.pygen`
  (generated here, deterministic in ``pygen_seed``; no task prompt occurs in them);
* a folder: every text file under it (UTF-8, no NUL bytes; hidden folders, ``__pycache__``,
  ``site-packages`` and ``dist-packages`` are skipped), optionally only those with given ``extensions``;
* a Hugging Face hub data set name (needs a network): its ``train`` split, text in ``text_column``;
* a list of the above: their documents together (ids prefixed by the source's position, ``0:``...).

``strip_docstrings=True`` removes docstrings and comment-only lines from Python files (folder
sources): real code without the prose the tasks never ask about.

Each document belongs to ``"train"`` or ``"val"`` by a hash of its id (the path relative to the
folder, with ``/`` separators; for hub data sets the ``path`` or ``id`` column, else the row index),
so the split is the same on every machine and no document is in both. The documents of a split, in
sorted id order, are tokenized, each preceded by ``<|endoftext|>``, concatenated, and cut into rows
of ``n_ctx`` tokens (the incomplete tail is dropped). The token stream of both splits is cached on
disk under ``cache_dir`` in a folder named by a hash of the documents' contents, the tokenizer and
the split settings, so a changed file or tokenizer never reads a stale cache.

Examples:
    >>> from sparselens.data import load_corpus, iter_batches
    >>> train = load_corpus(n_ctx=256, split="train")        # LongTensor [n_seq, 256]
    >>> batches = iter_batches(train, batch_size=32, seed=0)  # endless, reshuffled each epoch
    >>> next(batches).shape
    torch.Size([32, 256])
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

#: Bump when the cached format or the packing rule changes.
CACHE_FORMAT = 1
#: Splits of a corpus. ``"validation"`` is accepted as an alias of ``"val"``.
SPLITS = ("train", "val")
DEFAULT_VAL_FRACTION = 0.05


def stdlib_dir() -> Path:
    """The running Python's standard library folder."""
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def list_text_files(
    root: Path, extensions: Optional[Sequence[str]] = None, exclude_dirs: Sequence[str] = ("site-packages", "dist-packages")
) -> list[Path]:
    """Regular files under ``root`` (sorted; symlinks, hidden folders and ``__pycache__`` skipped).

    Args:
        root: folder to walk.
        extensions: keep only names ending in one of these (e.g. ``(".py",)``); None keeps all.
        exclude_dirs: folder names to skip wherever they occur.
    """
    skip = set(exclude_dirs) | {"__pycache__"}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if (extensions is None or name.endswith(tuple(extensions))) and path.is_file() and not path.is_symlink():
                out.append(path)
    return sorted(out)


def _unit_hash(text: str) -> float:
    """A stable hash of ``text`` in [0, 1)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def document_split(doc_id: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> str:
    """``"val"`` for a stable ``val_fraction`` of document ids, ``"train"`` for the rest."""
    return "val" if _unit_hash(doc_id) < val_fraction else "train"


def _normalise_split(split: str) -> str:
    split = "val" if split == "validation" else split
    if split not in SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; use 'train' or 'val'")
    return split


def _read_text(path: Path) -> Optional[str]:
    """The file's text if it is UTF-8 without NUL bytes, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _folder_documents(root: Path, extensions: Optional[Sequence[str]]) -> tuple[list[str], list[str]]:
    if not root.exists():
        raise FileNotFoundError(f"corpus folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"corpus source {str(root)!r} is a file; pass the folder that holds the text files")
    ids, texts = [], []
    for path in list_text_files(root, extensions):
        text = _read_text(path)
        if text:
            ids.append(path.relative_to(root).as_posix())
            texts.append(text)
    if not ids:
        wanted = f"files ending in {', '.join(extensions)}" if extensions else "files"
        raise ValueError(
            f"corpus folder {str(root)!r} has no text to train on: expected non-empty UTF-8 {wanted} "
            "(hidden folders, __pycache__, site-packages and dist-packages are skipped)"
        )
    return ids, texts


def _looks_like_path(source: Union[str, os.PathLike]) -> bool:
    """True for sources that can only be paths (absolute, ``./``, ``../``, ``~``, Path objects)."""
    text = str(source)
    return not isinstance(source, str) or os.path.isabs(text) or text.startswith((".", "~"))


def strip_python(text: str) -> str:
    """``text`` without docstrings and comment-only lines, if it parses as Python (else unchanged).

    Docstrings are the string-literal first statements of modules, classes and functions; their
    lines are removed (a one-line body that is only a docstring becomes ``pass``). Code lines keep
    their exact text, quotes included.
    """
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return text
    drop: set[int] = set()
    keep_pass: dict[int, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            lines = range(first.lineno, (first.end_lineno or first.lineno) + 1)
            if len(node.body) == 1 and not isinstance(node, ast.Module):
                keep_pass[first.lineno] = " " * first.col_offset + "pass"
            drop.update(lines)
    out = []
    for i, line in enumerate(text.splitlines(keepends=True), start=1):
        if i in keep_pass:
            out.append(keep_pass[i] + "\n")
        elif i not in drop and not line.lstrip().startswith("#"):
            out.append(line)
    return "".join(out)


#: Named sources besides folders and hub data sets.
STDLIB, PYGEN = "stdlib", "pygen"
DEFAULT_N_PROGRAMS = 100_000


def load_documents(
    source: Union[str, os.PathLike, None, Sequence[Union[str, os.PathLike]]] = None,
    extensions: Optional[Sequence[str]] = None,
    text_column: str = "text",
    *,
    strip_docstrings: bool = False,
    n_programs: int = DEFAULT_N_PROGRAMS,
    pygen_seed: int = 0,
    progress: bool = True,
) -> Any:
    """The documents of a source as a ``datasets.Dataset`` with columns ``id`` and ``text``.

    Args:
        source: None or ``"stdlib"`` (the standard library), ``"pygen"`` (generated programs), a
            folder (a ``Path``, or a string that exists or starts with ``/``, ``.`` or ``~``), a hub
            data set name, or a list of these (concatenated; ids prefixed ``"<position>:"``).
        extensions: file name endings to keep for folders (the standard library uses ``(".py",)``).
        text_column: the text column of a hub data set.
        strip_docstrings: drop docstrings and comment-only lines from folder sources
            (:func:`strip_python`).
        n_programs, pygen_seed: how many programs ``"pygen"`` generates, and from which seed.
        progress: show a progress bar while generating programs.
    """
    import datasets

    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("an empty list of corpus sources; give at least one source")
        ids, texts = [], []
        for i, part in enumerate(source):
            docs = load_documents(part, extensions, text_column, strip_docstrings=strip_docstrings,
                                  n_programs=n_programs, pygen_seed=pygen_seed, progress=progress)
            ids += [f"{i}:{d}" for d in docs["id"]]
            texts += list(docs["text"])
        return datasets.Dataset.from_dict({"id": ids, "text": texts})
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"corpus source must be a name, a path or a list of them, got {type(source).__name__}: {source!r}")
    if source == PYGEN:
        from sparselens.data.pygen import generate_documents

        ids, texts = generate_documents(n_programs, pygen_seed, progress=progress)
        return datasets.Dataset.from_dict({"id": ids, "text": texts})
    if source is None or source == STDLIB:
        ids, texts = _folder_documents(stdlib_dir(), extensions or (".py",))
    elif Path(source).expanduser().exists() or _looks_like_path(source):
        ids, texts = _folder_documents(Path(source).expanduser().resolve(), extensions)
    else:
        try:
            hub = datasets.load_dataset(str(source), split="train")
        except Exception as exc:
            raise FileNotFoundError(
                f"corpus source {str(source)!r} is not a folder on this machine, and loading it as a "
                f"Hugging Face hub data set failed ({type(exc).__name__}: {exc})"
            ) from exc
        if text_column not in hub.column_names:
            raise ValueError(f"hub data set {source!r} has no column {text_column!r}; columns: {hub.column_names}")
        id_column = next((c for c in ("path", "id") if c in hub.column_names), None)
        ids = [str(i) for i in hub[id_column]] if id_column else [str(i) for i in range(len(hub))]
        texts = hub[text_column]
    if strip_docstrings:
        texts = [strip_python(t) if i.endswith(".py") else t for i, t in zip(ids, texts)]
    return datasets.Dataset.from_dict({"id": ids, "text": texts})


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides how ``tokenizer`` splits text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{spec}".encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``$SPARSELENS_CACHE/corpus``, else ``~/.cache/sparselens/corpus``."""
    from sparselens.cache import cache_dir

    return cache_dir() / "corpus"


def tokenize_documents(
    docs: Any, tokenizer: Any, val_fraction: float = DEFAULT_VAL_FRACTION, progress: bool = True, chunk: int = 64
) -> dict[str, np.ndarray]:
    """Token streams ``{"train": [n], "val": [m]}``: each document, in sorted id order, after an EOT.

    Args:
        docs: a ``datasets.Dataset`` with ``id`` and ``text`` columns.
        tokenizer: a Hugging Face tokenizer with an ``eos_token`` (the end-of-text token).
        val_fraction: share of documents (by id hash) in ``"val"``.
        progress: show a tqdm bar over documents.
        chunk: documents per tokenizer call.
    """
    from tqdm.auto import tqdm

    eot = tokenizer.eos_token_id
    if eot is None:
        raise ValueError("the tokenizer has no eos_token; the corpus joins documents with the end-of-text token")
    ids_col, text_col = list(docs["id"]), list(docs["text"])
    order = sorted(range(len(ids_col)), key=ids_col.__getitem__)
    pieces: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    order = list(order)
    with tqdm(total=len(order), desc="tokenizing corpus", unit="doc", disable=not progress) as bar:
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            encoded = tokenizer([text_col[i] for i in idx], add_special_tokens=False, verbose=False)["input_ids"]
            for i, toks in zip(idx, encoded):
                pieces[document_split(ids_col[i], val_fraction)].append(np.asarray([eot, *toks], dtype=np.int64))
            bar.update(len(idx))
    return {s: np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for s, p in pieces.items()}


def _cache_key(docs: Any, tokenizer: Any, val_fraction: float, documents_key: str = "") -> str:
    """Hash of the cache format, split settings, tokenizer and documents (their text, or ``documents_key``)."""
    h = hashlib.sha256()
    h.update(f"format={CACHE_FORMAT}\nval_fraction={val_fraction!r}\n{documents_key}\n".encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    for doc_id, text in zip(docs["id"], docs["text"]) if docs is not None else ():
        h.update(hashlib.sha256(f"{doc_id}\0{text}".encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()[:24]


def load_corpus(
    source: Union[str, os.PathLike, None, Sequence[Union[str, os.PathLike]]] = None,
    n_ctx: int = 256,
    split: str = "train",
    tokenizer: Any = None,
    *,
    extensions: Optional[Sequence[str]] = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    cache_dir: Union[str, os.PathLike, None] = None,
    text_column: str = "text",
    progress: bool = True,
    strip_docstrings: bool = False,
    n_programs: int = DEFAULT_N_PROGRAMS,
    pygen_seed: int = 0,
) -> Int[Tensor, "n_seq n_ctx"]:
    """A packed pretraining split as a LongTensor ``[n_seq, n_ctx]``.

    Args:
        source: None or ``"stdlib"`` (the standard library's ``.py`` files), ``"pygen"`` (generated
            programs), a folder of text files, a hub name, or a list of these.
        n_ctx: tokens per row.
        split: ``"train"`` or ``"val"`` (documents split by a hash of their path).
        tokenizer: defaults to the shipped tokenizer (:func:`sparselens.data.load_tokenizer`).
        extensions: for folders, keep only files with these endings (e.g. ``(".py", ".md")``).
        val_fraction: share of documents in ``"val"``.
        cache_dir: where token streams are cached (default :func:`default_cache_dir`).
        text_column: the text column of a hub data set.
        progress: show a progress bar while tokenizing.
        strip_docstrings, n_programs, pygen_seed: see :func:`load_documents`.

    Raises:
        FileNotFoundError: the source is neither a folder nor a loadable hub data set.
        ValueError: the folder holds no text, or the split has fewer than ``n_ctx`` tokens.
    """
    split = _normalise_split(split)
    if n_ctx < 1:
        raise ValueError(f"n_ctx must be positive, got {n_ctx}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if tokenizer is None:
        from sparselens.data.tokenizer_io import load_tokenizer

        tokenizer = load_tokenizer()
    def documents() -> Any:
        return load_documents(source, extensions, text_column, strip_docstrings=strip_docstrings,
                              n_programs=n_programs, pygen_seed=pygen_seed, progress=progress)

    docs = None
    if source == PYGEN:  # generated documents are keyed by the generator, so a cached corpus is not regenerated
        from sparselens.data.pygen import generator_fingerprint

        key = _cache_key(None, tokenizer, val_fraction, f"pygen:{generator_fingerprint()}:{n_programs}:{pygen_seed}")
    else:
        docs = documents()
        key = _cache_key(docs, tokenizer, val_fraction)
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / key
    path = folder / f"{split}.npy"
    if not path.exists():
        docs = docs if docs is not None else documents()
        streams = tokenize_documents(docs, tokenizer, val_fraction, progress)
        folder.mkdir(parents=True, exist_ok=True)
        dtype = np.uint16 if len(tokenizer) <= 2**16 else np.int32
        for name, stream in streams.items():
            tmp = folder / f"{name}.{os.getpid()}.tmp.npy"
            np.save(tmp, stream.astype(dtype))
            os.replace(tmp, folder / f"{name}.npy")
        (folder / "meta.json").write_text(
            json.dumps(
                {"source": _describe_source(source), "n_documents": len(docs),
                 "tokens": {k: int(v.size) for k, v in streams.items()}, "val_fraction": val_fraction},
                indent=1,
            )
        )
    stream = np.load(path)
    n_seq = stream.size // n_ctx
    if n_seq == 0:
        raise ValueError(
            f"the {split!r} split of corpus {_describe_source(source)!r} has {stream.size} tokens, "
            f"fewer than n_ctx={n_ctx}; use more documents, a smaller n_ctx, or a different val_fraction"
        )
    return torch.from_numpy(stream[: n_seq * n_ctx].astype(np.int64)).view(n_seq, n_ctx)


def _describe_source(source: Any) -> str:
    if isinstance(source, (list, tuple)):
        return "+".join(_describe_source(s) for s in source)
    return f"stdlib:{stdlib_dir()}" if source is None or source == STDLIB else str(source)


def iter_batches(
    tokens: Int[Tensor, "n_seq n_ctx"], batch_size: int, seed: int = 0, start_step: int = 0
) -> Iterator[Int[Tensor, "batch n_ctx"]]:
    """Endless shuffled batches of rows; each epoch is a fresh permutation seeded by ``(seed, epoch)``.

    Step ``k`` yields the same batch whatever ``start_step`` the iterator began at, so a resumed
    run sees exactly the batches an uninterrupted one would. The last ``n_seq % batch_size`` rows of
    each epoch's permutation are skipped.

    Args:
        tokens: ``[n_seq, n_ctx]`` rows, e.g. from :func:`load_corpus`.
        batch_size: rows per batch, at most ``n_seq``.
        seed: shuffling seed.
        start_step: index of the first batch to yield.
    """
    n_seq = tokens.shape[0]
    if not 0 < batch_size <= n_seq:
        raise ValueError(f"batch_size must be between 1 and the number of sequences ({n_seq}), got {batch_size}")
    per_epoch = n_seq // batch_size
    step = start_step
    epoch, perm = -1, None
    while True:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            perm = torch.randperm(n_seq, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        offset = (step % per_epoch) * batch_size
        assert perm is not None  # drawn on the first step (epoch starts at -1)
        yield tokens[perm[offset : offset + batch_size]]
        step += 1
