"""SparseTransformerConfig: the architecture of a weight-sparse transformer (METHOD.md section 1).

The config is the single source of truth for shapes. The node-site registry (`sparselens.nodes`)
is derived from it, so masks, circuits and dashboards never rebuild hook names by hand.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from transformer_lens.config import TransformerLensConfig

from sparselens.errors import closest_hint
from sparselens.wiring import NodeKind

#: Sites where AbsTopK activation sparsity can apply: every node site (:class:`NodeKind`), in
#: forward order within a block. ``attn_in``/``mlp_in`` are the normed residual reads,
#: ``q``/``k``/``v`` the attention channels (top-k taken jointly over all heads),
#: ``attn_out``/``mlp_out`` the residual writes and ``neuron`` the MLP hidden layer after the
#: activation function.
ABSTOPK_SITES: tuple[str, ...] = tuple(kind.value for kind in NodeKind)

ACT_FNS = ("gelu", "relu")
POSITIONAL_EMBEDDING_TYPES = ("none", "learned")


@dataclass(kw_only=True)
class SparseTransformerConfig(TransformerLensConfig):
    """Architecture of a GPT-2-style pre-norm decoder with activation and weight sparsity.

    Args:
        n_layers: number of transformer blocks.
        d_model: residual stream width.
        n_ctx: maximum sequence length.
        d_head: width of one attention head (the paper uses small heads, 16).
        n_heads: number of heads; defaults to ``d_model // d_head``.
        d_mlp: MLP hidden width; defaults to ``4 * d_model``.
        d_vocab: vocabulary size; defaults to 2048, the shipped Python BPE.
        act_fn: MLP activation, ``"gelu"`` or ``"relu"``.
        afrac: AbsTopK keep fraction; each site keeps ``int(afrac * width)`` entries per token.
            ``None`` turns activation sparsity off everywhere.
        abstopk_sites: which of :data:`ABSTOPK_SITES` apply AbsTopK.
        attn_sink: give each head a learnable sink logit (an always-visible slot with key 0 and
            value 0 that only adds mass to the softmax denominator).
        bigram_table: add a dense ``d_vocab x d_vocab`` table row for the current token to the
            logits.
        positional_embedding_type: ``"none"`` (the default) or ``"learned"``.
        use_bias: biases on every linear layer and on the unembedding.
        eps: RMSNorm epsilon.
        init_std: std of the normal init; output projections use ``init_std / sqrt(2 n_layers)``.
        seed: seed for weight initialisation, ``None`` for torch's global RNG.
        tokenizer_name: name or path of the tokenizer the model was trained with, if any.

    Examples:
        >>> cfg = SparseTransformerConfig(n_layers=2, d_model=64, d_head=16, n_ctx=32, d_vocab=128)
        >>> cfg.n_heads, cfg.d_mlp
        (4, 256)
    """

    # Redeclared with the paper's defaults (the base class requires them).
    d_head: int = 16
    d_vocab: int = 2048
    act_fn: str = "gelu"
    positional_embedding_type: str = "none"
    default_prepend_bos: bool = False
    normalization_type: Optional[str] = "RMS"
    uses_rms_norm: bool = True
    final_rms: bool = True

    afrac: Optional[float] = 0.25
    abstopk_sites: tuple[str, ...] = field(default_factory=lambda: ABSTOPK_SITES)
    attn_sink: bool = False
    bigram_table: bool = False
    use_bias: bool = True
    init_std: float = 0.02
    seed: Optional[int] = None
    tokenizer_name: Optional[str] = None

    def __post_init__(self) -> None:
        self.abstopk_sites = tuple(self.abstopk_sites)
        for name in ("n_layers", "d_model", "n_ctx", "d_head", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SparseTransformerConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads == -1 and self.d_model % self.d_head != 0:
            raise ValueError(
                f"SparseTransformerConfig.d_model ({self.d_model}) is not divisible by d_head "
                f"({self.d_head}); pass n_heads explicitly or pick d_model = n_heads * d_head"
            )
        super().__post_init__()
        if self.n_heads <= 0:
            raise ValueError(f"SparseTransformerConfig.n_heads must be positive, got {self.n_heads}")
        if self.d_mlp is None or self.d_mlp <= 0:
            raise ValueError(f"SparseTransformerConfig.d_mlp must be positive, got {self.d_mlp}")
        if self.act_fn not in ACT_FNS:
            raise ValueError(
                f"SparseTransformerConfig.act_fn={self.act_fn!r} is not supported; use one of {ACT_FNS}"
                + closest_hint(self.act_fn, ACT_FNS)
            )
        if self.positional_embedding_type not in POSITIONAL_EMBEDDING_TYPES:
            raise ValueError(
                "SparseTransformerConfig.positional_embedding_type="
                f"{self.positional_embedding_type!r} is not supported; use one of "
                f"{POSITIONAL_EMBEDDING_TYPES}" + closest_hint(self.positional_embedding_type, POSITIONAL_EMBEDDING_TYPES)
            )
        if self.afrac is not None and not (0.0 < self.afrac <= 1.0):
            raise ValueError(
                f"SparseTransformerConfig.afrac must be in (0, 1] or None (no activation sparsity), "
                f"got {self.afrac}"
            )
        for site in self.abstopk_sites:
            if site not in ABSTOPK_SITES:
                raise ValueError(
                    f"SparseTransformerConfig.abstopk_sites has unknown site {site!r}; valid sites are "
                    f"{ABSTOPK_SITES}" + closest_hint(site, ABSTOPK_SITES)
                )
        if self.normalization_type != "RMS":
            raise ValueError(
                f"SparseTransformerConfig.normalization_type must be 'RMS' (weight-sparse models use "
                f"RMSNorm so that zero keeps its meaning), got {self.normalization_type!r}"
            )
        if self.eps <= 0:
            raise ValueError(f"SparseTransformerConfig.eps must be positive, got {self.eps}")
        if self.init_std <= 0:
            raise ValueError(f"SparseTransformerConfig.init_std must be positive, got {self.init_std}")

    # ---------------------------------------------------------------- derived quantities
    def abstopk_k(self, site: str, width: int) -> Optional[int]:
        """Entries AbsTopK keeps per token at ``site`` of the given width, or None if it is off."""
        if self.afrac is None or site not in self.abstopk_sites:
            return None
        return int(self.afrac * width)

    @property
    def d_qkv(self) -> int:
        """Channels of one of Q, K, V summed over heads: ``n_heads * d_head``."""
        return self.n_heads * self.d_head

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (dtype as a string, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> "SparseTransformerConfig":
        """Build a config from :meth:`to_dict` output; unknown keys are an error naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in config_dict if k not in names]
        if unknown:
            raise ValueError(
                f"unknown SparseTransformerConfig field(s) {unknown}" + closest_hint(unknown[0], names)
            )
        kwargs = dict(config_dict)
        if isinstance(kwargs.get("dtype"), str):
            kwargs["dtype"] = getattr(torch, kwargs["dtype"])
        return cls(**kwargs)
