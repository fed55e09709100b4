"""The released weight-sparse models of Gao et al. (2025): their checkpoint format and their tokenizer.

A pure conversion, as TransformerLens has one per model family: a released nanoGPT-style state dict
becomes a :class:`HookedSparseTransformer` state dict, and the released ``tinypython_2k`` BPE
becomes a Hugging Face fast tokenizer that tokenizes exactly as the released ``tiktoken`` encoding.
Where the files come from (download, cache) is :mod:`sparselens.pretrained`'s business.

The release (``sparselens.pretrained.RELEASED_BASE_URL``, or ``$SPARSELENS_RELEASED_URL``) is laid
out as::

    <base>/models/<name>/beeg_config.json   nanoGPT-style config (METHOD.md section 1)
    <base>/models/<name>/final_model.pt     the state dict, torch.save'd
    <base>/tinypython/encoder.json          the tinypython_2k BPE in GPT-2's "data gym" format:
    <base>/tinypython/vocab.bpe             token -> rank, and "#version: 0.2" + the merges in rank order

and the cache (``$SPARSELENS_CACHE``) mirrors it, so a model directory's tokenizer is found at
``<model dir>/../../tinypython`` (or next to the weights).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, Optional, Union

import torch
from tqdm.auto import tqdm

from sparselens.config import SparseTransformerConfig
from sparselens.errors import CheckpointError
from sparselens.model.checkpoint import AUTO, as_dtype, load_state_dict_checked, read_json, release_parameters
from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

RELEASED_CONFIG_FILE = "beeg_config.json"
RELEASED_WEIGHTS_FILE = "final_model.pt"
RELEASED_MODELS_DIR = "models"  # <base>/models/<name>/
TOKENIZER_DIR_NAME = "tinypython"  # <base>/tinypython/
ENCODER_FILE = "encoder.json"
MERGES_FILE = "vocab.bpe"
TOKENIZER_FILES = (ENCODER_FILE, MERGES_FILE)

#: The released models' tokenizer (``tokenizer_name`` in their beeg_config.json; also the released
#: GPTConfig's default, so a config without the field means it too).
TINYPYTHON_NAME = "tinypython_2k"
EOT = "<|endoftext|>"
#: ``<|endoftext|>``'s id in the released encoding (its only special token).
TINYPYTHON_EOT_ID = 2047

#: The pre-tokenizer regex of the released ``tinypython_2k`` tiktoken encoding, verbatim from
#: ``circuit_sparsity/tiktoken_ext/tinypython.py`` in openai/circuit_sparsity (``pat_str``). It is
#: cl100k-like without contractions; a newline is never merged with the indentation after it
#: (``\s*[\r\n]+`` takes trailing blanks and newlines, the indentation is a piece of its own), and
#: punctuation takes the newlines that follow it (``"):\n"`` is one piece). The single place to
#: change: the fast tokenizer is built from it and the test compares with tiktoken using it.
TINYPYTHON_PATTERN = r"""[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Released ``afrac_loctypes`` -> our AbsTopK site names.
_RELEASED_SITES = {
    "attn_in": "attn_in",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_out": "attn_out",
    "mlp_in": "mlp_in",
    "mlp_neuron": "neuron",
    "mlp_out": "mlp_out",
}


# ---------------------------------------------------------------------------- config and weights
def released_config(
    beeg: dict[str, Any], has_wpe: bool, dtype: Union[torch.dtype, str, None] = None
) -> SparseTransformerConfig:
    """Translate a released ``beeg_config.json`` into a :class:`SparseTransformerConfig`."""
    unsupported = {
        "rms_norm": (beeg.get("rms_norm", False) is not True, "LayerNorm models are not weight-sparse models"),
        "residual_activation_type": (
            beeg.get("residual_activation_type", "identity") != "identity",
            "a ReLU on the residual stream is not supported",
        ),
        "d_pos_emb": (beeg.get("d_pos_emb") is not None, "concatenated positional embeddings are not supported"),
    }
    for field_name, (bad, why) in unsupported.items():
        if bad:
            raise CheckpointError(f"released config has {field_name}={beeg.get(field_name)!r}: {why}")
    n_head, d_model = beeg["n_head"], beeg["d_model"]
    sites = [s.strip() for s in str(beeg.get("afrac_loctypes", "attn_in,attn_out,mlp_in,mlp_out")).split(",") if s.strip()]
    for s in sites:
        if s not in _RELEASED_SITES:
            raise CheckpointError(f"released config sparsifies {s!r}, which sparselens does not model")
    return SparseTransformerConfig(
        n_layers=beeg["n_layer"],
        d_model=d_model,
        n_ctx=beeg["block_size"],
        n_heads=n_head,
        d_head=beeg.get("d_head") or d_model // n_head,
        d_mlp=beeg.get("d_mlp") or beeg.get("n_mlp") or 4 * d_model,
        d_vocab=beeg["vocab_size"],
        act_fn=beeg.get("activation_type", "gelu"),
        afrac=beeg.get("afrac"),
        abstopk_sites=tuple(_RELEASED_SITES[s] for s in sites),
        attn_sink=bool(beeg.get("sink", False)),
        bigram_table=bool(beeg.get("enable_bigram_table", False)),
        positional_embedding_type="learned" if has_wpe else "none",
        use_bias=bool(beeg.get("bias", True)),
        eps=float(torch.finfo(torch.float32).eps),  # torch.nn.RMSNorm's default
        tokenizer_name=beeg.get("tokenizer_name", TINYPYTHON_NAME),
        dtype=as_dtype(dtype) or torch.float32,
        device="cpu",
    )


def released_state_dict(
    sd: dict[str, torch.Tensor], cfg: SparseTransformerConfig, dtype: Union[torch.dtype, str, None] = None
) -> dict[str, torch.Tensor]:
    """Rename and split a released nanoGPT-style state dict into ours, tensor by tensor.

    Every tensor of ``sd`` is used or the conversion fails: a tensor the config does not account for
    (a LayerNorm bias, a bias in a ``bias=False`` model, a sink or bigram table the config turns off)
    would otherwise be silently dropped and the model would compute something else. The one tensor
    accepted and not used is the non-flash attention's causal-mask buffer (``attn.bias``), and only
    if it is the causal mask.

    Tensors already in ``dtype`` (default float32) and laid out as ours are returned as they are
    (views of a memory-mapped file stay views); others are converted one at a time.
    """
    dtype = as_dtype(dtype) or torch.float32
    sd = {k.removeprefix("_orig_mod."): v for k, v in sd.items()}
    used: set[str] = set()

    def convert(v: torch.Tensor) -> torch.Tensor:
        v = v.to_dense() if v.is_sparse else v
        return v if v.dtype == dtype else v.to(dtype)

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"released checkpoint is missing {key!r}")
        used.add(key)
        return convert(sd[key])

    def optional(key: str) -> Optional[torch.Tensor]:
        return take(key) if key in sd else None

    out = {"embed.W_E": take("transformer.wte.weight"), "ln_final.w": take("transformer.ln_f.weight")}
    lm_head = optional("lm_head.weight")  # present even when tied (the same tensor as wte)
    out["unembed.weight"] = lm_head if lm_head is not None else out["embed.W_E"]
    if out["unembed.weight"].data_ptr() == out["embed.W_E"].data_ptr():
        out["unembed.weight"] = out["unembed.weight"].clone()  # our embedding and unembedding are separate
    bias = optional("final_logits_bias")
    out["unembed.b_U"] = bias if bias is not None else torch.zeros(cfg.d_vocab, dtype=dtype)
    if cfg.positional_embedding_type == "learned":
        out["pos_embed.W_pos"] = take("transformer.wpe.weight")
    if cfg.bigram_table:
        out["bigram.table"] = take("bigram_table")
    for l in range(cfg.n_layers):
        src, dst = f"transformer.h.{l}.", f"blocks.{l}."
        out[dst + "ln1.w"] = take(src + "ln_1.weight")
        out[dst + "ln2.w"] = take(src + "ln_2.weight")
        suffixes = ["weight", "bias"] if cfg.use_bias else ["weight"]
        for suffix in suffixes:
            q, k, v = take(src + f"attn.c_attn.{suffix}").split(cfg.d_qkv, dim=0)
            out[dst + f"attn.q_proj.{suffix}"] = q
            out[dst + f"attn.k_proj.{suffix}"] = k
            out[dst + f"attn.v_proj.{suffix}"] = v
            out[dst + f"attn.o_proj.{suffix}"] = take(src + f"attn.c_proj.{suffix}")
            out[dst + f"mlp.fc_in.{suffix}"] = take(src + f"mlp.c_fc.{suffix}")
            out[dst + f"mlp.fc_out.{suffix}"] = take(src + f"mlp.c_proj.{suffix}")
        if cfg.attn_sink:
            key = next((k for k in (src + "attn.attn_imp.sink_logit", src + "attn.sink_logit") if k in sd), None)
            if key is None:
                raise CheckpointError(f"released config has sink=True but no sink_logit for layer {l}")
            out[dst + "attn.sink_logit"] = take(key).reshape(-1).expand(cfg.n_heads).clone()
        mask_key = src + "attn.bias"  # the causal mask buffer of the non-flash attention
        if mask_key in sd:
            mask = sd[mask_key]
            n = mask.shape[-1] if mask.ndim >= 2 else -1
            if mask.ndim < 2 or mask.shape[-2] != n or not torch.equal(
                mask.reshape(-1, n, n)[0] != 0, torch.ones(n, n, dtype=torch.bool).tril()
            ):
                raise CheckpointError(f"released checkpoint has {mask_key!r} of shape {tuple(mask.shape)}, which is not the causal mask")
            used.add(mask_key)
    unexpected = sorted(set(sd) - used)
    if unexpected:
        raise CheckpointError(
            f"released checkpoint has {len(unexpected)} tensors that its config does not account for, e.g. "
            f"{unexpected[:8]}; sparselens would have to drop them and the model would compute something "
            "else (LayerNorm biases belong to a LayerNorm model; biases, sinks and a bigram table need "
            "bias/sink/enable_bigram_table in beeg_config.json). Is beeg_config.json the one for these weights?"
        )
    return {k: v.contiguous() for k, v in out.items()}


def read_released_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``final_model.pt``, memory-mapped (pages are read when a tensor is used).

    ``torch.load(mmap=True)`` maps the file instead of reading it into memory, so converting it
    never holds the checkpoint twice; files in torch's legacy (pre-zip) format are read normally.
    """
    try:
        try:
            sd = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zipfile" not in str(err):
                raise
            sd = torch.load(weights, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as err:  # torch raises several types for truncated zip / pickle data
        raise CheckpointError(
            f"{weights} could not be read ({type(err).__name__}: {err}); the file is truncated or corrupt. "
            "Download it again."
        ) from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{weights} holds a {type(sd).__name__}, not a state dict")
    return sd


def is_released_checkpoint(path: Path) -> bool:
    """Whether directory ``path`` holds a released checkpoint (its ``beeg_config.json``)."""
    return (Path(path) / RELEASED_CONFIG_FILE).exists()


def load_released(
    path: Union[str, Path],
    device: Optional[str] = None,
    *,
    dtype: Union[torch.dtype, str, None] = None,
    tokenizer: Any = AUTO,
) -> HookedSparseTransformer:
    """Load a released ``beeg_config.json`` + ``final_model.pt`` directory.

    The weights are memory-mapped and become the model's parameters without a copy when they are
    already in ``dtype`` (peak memory about one checkpoint; see benchmarks/load_released.py).

    Args:
        path: the directory.
        device: where the model goes (default CPU).
        dtype: the parameters' dtype (default float32, the released one); converted tensor by tensor.
        tokenizer: ``"auto"``: the released tokenizer its config names, built from ``encoder.json``
            + ``vocab.bpe`` found next to the weights or at ``<path>/../../tinypython`` (the
            release's layout, which the cache mirrors; ``HookedSparseTransformer.from_pretrained``
            downloads them when missing). Or a directory holding those two files, a tokenizer, or
            None for no tokenizer.

    Raises:
        CheckpointError: a missing, truncated or inconsistent checkpoint, or (``"auto"``) no
            tokenizer files.
    """
    path = Path(path)
    beeg = read_json(path / RELEASED_CONFIG_FILE)
    weights = path / RELEASED_WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{path} has {RELEASED_CONFIG_FILE} but no {RELEASED_WEIGHTS_FILE}")
    tokenizer_name = beeg.get("tokenizer_name", TINYPYTHON_NAME)
    if isinstance(tokenizer, str) and tokenizer == AUTO and tokenizer_name is None:
        tokenizer = None  # the config says it had no tokenizer
    if isinstance(tokenizer, (str, Path)):
        if tokenizer_name != TINYPYTHON_NAME:
            raise CheckpointError(
                f"{path} is a released model trained with the tokenizer {tokenizer_name!r}; sparselens can build "
                f"only {TINYPYTHON_NAME!r} from encoder.json + vocab.bpe. Pass tokenizer=<a tokenizer> or tokenizer=None."
            )
        folder = find_tokenizer_dir(path) if str(tokenizer) == AUTO else Path(tokenizer)
        if folder is None:
            raise CheckpointError(
                f"{path} is a released model trained with the {tokenizer_name!r} tokenizer, but its files "
                f"({', '.join(TOKENIZER_FILES)}) are neither in {path} nor in {path.parent.parent / TOKENIZER_DIR_NAME}. "
                "HookedSparseTransformer.from_pretrained(...) downloads them into the cache; or copy them "
                "there, or pass tokenizer=None to load the model without a tokenizer."
            )
        tokenizer = build_released_tokenizer(folder)
    sd = read_released_weights(weights)
    try:
        cfg = released_config(beeg, has_wpe="transformer.wpe.weight" in sd, dtype=dtype)
    except KeyError as err:
        raise CheckpointError(f"{path / RELEASED_CONFIG_FILE} lacks the field {err}") from None
    model = HookedSparseTransformer(cfg)
    release_parameters(model)  # its fresh parameters are never in memory together with the checkpoint
    state = released_state_dict(sd, cfg, dtype=cfg.dtype)
    del sd
    load_state_dict_checked(model, state, source=str(weights), assign=True)
    del state
    if tokenizer is not None:
        model.set_tokenizer(tokenizer)
    model.pretrained_path = path
    return model.to(device or "cpu")


# ---------------------------------------------------------------------------- tokenizer
def find_tokenizer_dir(model_dir: Union[str, Path], *more: Union[str, Path]) -> Optional[Path]:
    """The first folder holding ``encoder.json`` + ``vocab.bpe``: the model directory, then
    ``<model dir>/../../tinypython`` (the release's layout), then ``more``; None if none does."""
    model_dir = Path(model_dir)
    for folder in (model_dir, model_dir.parent.parent / TOKENIZER_DIR_NAME, *map(Path, more)):
        if all((folder / f).is_file() for f in TOKENIZER_FILES):
            return folder
    return None


def _data_gym_byte_chars() -> list[str]:
    """GPT-2's byte -> printable character map, as a list in data-gym rank order (ranks 0..255)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [chars[b] for b in range(256) if b not in printable]


def read_data_gym(folder: Union[str, Path]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)`` of a GPT-2 "data gym" BPE (``encoder.json`` + ``vocab.bpe``) in ``folder``.

    ``vocab`` maps the byte-to-unicode token strings to their ranks (special tokens left out);
    it is checked as ``tiktoken.load.data_gym_to_mergeable_bpe_ranks`` checks it: the 256 bytes
    first in GPT-2's order, then one token per merge, in merge order.
    """
    folder = Path(folder)
    try:
        encoder = json.loads((folder / ENCODER_FILE).read_text(encoding="utf-8"))
        lines = (folder / MERGES_FILE).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"the tokenizer files in {folder} could not be read ({err}); download them again") from None
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    bad = [m for m in merges if len(m) != 2]
    vocab = {k: v for k, v in encoder.items() if k not in (EOT, "<|startoftext|>")}
    expected = {c: i for i, c in enumerate(_data_gym_byte_chars())}
    for a, b in merges:
        expected.setdefault(a + b, len(expected))
    if bad or vocab != expected:
        raise CheckpointError(
            f"{folder / ENCODER_FILE} and {folder / MERGES_FILE} do not match (each merge must add the next "
            "token, after the 256 bytes); the files are corrupt or not a GPT-2 data-gym BPE"
        )
    return vocab, merges  # type: ignore[return-value]


def build_released_tokenizer(folder: Union[str, Path], name: str = TINYPYTHON_NAME, eot_id: Optional[int] = None) -> Any:
    """A ``transformers`` fast tokenizer for the data-gym BPE in ``folder`` that tokenizes as tiktoken.

    Equivalent to ``tiktoken.Encoding(name, pat_str=TINYPYTHON_PATTERN, mergeable_ranks=
    data_gym_to_mergeable_bpe_ranks(vocab.bpe, encoder.json), special_tokens={EOT: eot_id})``:
    the same regex (a ``Split`` pre-tokenizer, pieces isolated), bytes mapped as GPT-2 does
    (``ByteLevel`` without its own regex), the BPE with tiktoken's whole-piece lookup
    (``ignore_merges``). ``<|endoftext|>`` is the BOS, EOS and pad token.

    Args:
        folder: holds ``encoder.json`` and ``vocab.bpe``.
        name: recorded as the tokenizer's name (compared with ``cfg.tokenizer_name``).
        eot_id: the id of ``<|endoftext|>``; default 2047 for ``tinypython_2k`` (the released
            encoding's), else the first id after the BPE's tokens.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sparselens.data.tokenizer_io import set_tokenizer_name

    vocab, merges = read_data_gym(folder)
    if eot_id is None:
        eot_id = TINYPYTHON_EOT_ID if name == TINYPYTHON_NAME else len(vocab)
    if eot_id < len(vocab):
        raise CheckpointError(f"{name}: <|endoftext|> id {eot_id} collides with the BPE's {len(vocab)} tokens")
    backend = Tokenizer(models.BPE(vocab={**vocab, EOT: eot_id}, merges=merges, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TINYPYTHON_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOT, bos_token=EOT, pad_token=EOT, clean_up_tokenization_spaces=False
    )
    return set_tokenizer_name(tokenizer, name)


# ---------------------------------------------------------------------------- download
def download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, atomically (a partial file never stays)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not download {url} ({err}). Check the network, or download the files by hand "
            f"into {dest.parent} and load that directory."
        ) from None
    tmp.replace(dest)
    return dest


__all__ = [
    "EOT", "RELEASED_CONFIG_FILE", "RELEASED_WEIGHTS_FILE", "TINYPYTHON_EOT_ID", "TINYPYTHON_NAME",
    "TINYPYTHON_PATTERN", "TOKENIZER_DIR_NAME", "TOKENIZER_FILES", "build_released_tokenizer", "download",
    "find_tokenizer_dir", "is_released_checkpoint", "load_released", "read_data_gym", "read_released_weights",
    "released_config", "released_state_dict",
]
