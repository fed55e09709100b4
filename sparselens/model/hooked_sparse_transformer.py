"""HookedSparseTransformer: the one forward pass of a weight-sparse transformer.

Everything else in sparselens (caching, masks, ablations, frozen norms, bridges, steering) is a hook
function on the hook points defined here. The hook names and shapes are TransformerLens's.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule

from sparselens.config import SparseTransformerConfig
from sparselens.errors import UnknownNameError
from sparselens.model.attention import Attention
from sparselens.model.block import TransformerBlock
from sparselens.model.cache import SparseActivationCache
from sparselens.model.cross_entropy import IGNORE_INDEX, cross_entropy_per_row
from sparselens.model.embed import BigramTable, Embed, PosEmbed, Unembed
from sparselens.model.hook_point import CheckedHookPoint
from sparselens.model.rms_norm import RMSNorm
from sparselens.nodes import NodeRegistry, NodeSite

logger = logging.getLogger(__name__)

ReturnType = Optional[Literal["logits", "loss", "both"]]
TextOrTokens = Union[str, list[str], Int[Tensor, "batch pos"], Int[Tensor, " pos"]]


class HookedSparseTransformer(HookedRootModule):
    """A GPT-2-style pre-norm decoder with AbsTopK activation sparsity and TransformerLens hooks.

    Examples:
        >>> cfg = SparseTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_vocab=128, seed=0)
        >>> model = HookedSparseTransformer(cfg)
        >>> tokens = torch.randint(0, 128, (2, 10))
        >>> logits, cache = model.run_with_cache(tokens)
        >>> logits.shape, cache["q", 0].shape, cache["pattern", 1].shape
        (torch.Size([2, 10, 128]), torch.Size([2, 10, 4, 16]), torch.Size([2, 4, 10, 10]))

    Hook points are listed in DESIGN.md; ``model.hook_dict`` has them all and ``model.node_sites``
    the ones whose channels are nodes.
    """

    def __init__(self, cfg: SparseTransformerConfig, tokenizer: Any = None):
        super().__init__()
        if not isinstance(cfg, SparseTransformerConfig):
            raise TypeError(f"cfg must be a SparseTransformerConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = CheckedHookPoint()
        if cfg.positional_embedding_type == "learned":
            self.pos_embed = PosEmbed(cfg)
            self.hook_pos_embed = CheckedHookPoint()
        self.blocks = nn.ModuleList([TransformerBlock(cfg, layer) for layer in range(cfg.n_layers)])
        self.ln_final = RMSNorm(cfg.d_model, cfg.eps)
        self.unembed = Unembed(cfg)
        if cfg.bigram_table:
            self.bigram = BigramTable(cfg)
            self.hook_bigram = CheckedHookPoint()  # [batch pos d_vocab], added to the logits
        self.init_weights()
        self.setup()
        self.node_registry = NodeRegistry(cfg)
        self.tokenizer = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        self._compiled_with_hooks: Optional[frozenset[str]] = None
        self.pretrained_path: Optional[Path] = None  # the directory it was loaded from, if any
        self.to(cfg.device)

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, init_std) everywhere; output projections N(0, init_std / sqrt(2 n_layers)); biases 0."""
        gen = torch.Generator().manual_seed(self.cfg.seed) if self.cfg.seed is not None else None
        out_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "fc_out.weight")):
                std = out_std
            elif name.endswith(("ln1.w", "ln2.w", "ln_final.w")):
                param.fill_(1.0)
                continue
            elif name.endswith(("bias", "b_U", "sink_logit", "bigram.table")):
                param.zero_()
                continue
            else:
                std = self.cfg.init_std
            param.copy_(torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype) * std)

    # ------------------------------------------------------------------ nodes
    @property
    def node_sites(self) -> tuple[NodeSite, ...]:
        """Every node site (eight per layer) in forward order; each has ``.hook_name`` and ``.n_nodes``."""
        return self.node_registry.sites

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input: TextOrTokens,
        return_type: ReturnType = "logits",
        stop_at_layer: Optional[int] = None,
        loss_per_token: bool = False,
        check_tokens: bool = True,
    ) -> Any:
        """Run the model.

        Args:
            input: tokens [batch pos] (or [pos]), or text if a tokenizer is attached.
            return_type: ``"logits"`` [batch pos d_vocab], ``"loss"`` (mean next-token
                cross-entropy), ``"both"`` (logits, loss) or ``None``.
            stop_at_layer: if set, run only blocks ``[:stop_at_layer]`` and return the residual
                stream [batch pos d_model] entering block ``stop_at_layer``.
            loss_per_token: return the loss per token [batch pos-1] instead of its mean.
            check_tokens: check that every id is below ``d_vocab`` (a clear error on CPU input; a
                device-side assert, with no host sync, on an accelerator). The trainer checks its
                data once up front and passes False.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        tokens = self._as_tokens(input, check_tokens)
        resid = self.hook_embed(self.embed(tokens))
        if self.cfg.positional_embedding_type == "learned":
            resid = resid + self.hook_pos_embed(self.pos_embed(tokens))
        blocks = self.blocks if stop_at_layer is None else self.blocks[:stop_at_layer]
        for block in blocks:
            resid = block(resid)
        if stop_at_layer is not None:
            return resid
        logits = self.unembed(self.ln_final(resid))
        if self.cfg.bigram_table:
            logits = logits + self.hook_bigram(self.bigram(tokens))
        if return_type is None:
            return None
        if return_type == "logits":
            return logits
        loss = self.loss_fn(logits, tokens, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    @staticmethod
    def loss_fn(
        logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"], per_token: bool = False
    ) -> Tensor:
        """Next-token cross-entropy: mean over tokens, or [batch pos-1] with ``per_token``.

        The last position predicts nothing (its target is ``ignore_index``), so the logits are used
        whole, never copied out of a slice.
        """
        targets = F.pad(tokens[:, 1:], (0, 1), value=IGNORE_INDEX)
        nll = cross_entropy_per_row(logits.flatten(0, 1), targets.flatten()).view(tokens.shape)
        nll = nll[:, :-1]
        return nll.contiguous() if per_token else nll.mean()

    def _as_tokens(self, input: TextOrTokens, check_tokens: bool = True) -> Int[Tensor, "batch pos"]:
        if isinstance(input, (str, list)):
            input = self.to_tokens(input)
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a token tensor or text, got {type(input).__name__}")
        if input.dtype.is_floating_point or input.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got dtype {input.dtype}")
        if input.ndim == 1:
            input = input.unsqueeze(0)
        if input.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, pos] or [pos], got {tuple(input.shape)}")
        if input.shape[1] > self.cfg.n_ctx:
            raise ValueError(
                f"sequence length {input.shape[1]} exceeds the model's context n_ctx={self.cfg.n_ctx}; "
                "truncate or split the input"
            )
        if check_tokens and input.numel():
            if input.device.type == "cpu":  # reading the range back is free here
                low, high = (int(v) for v in torch.aminmax(input))
                if low < 0 or high >= self.cfg.d_vocab:
                    raise ValueError(
                        f"token ids must be in [0, {self.cfg.d_vocab}); got min {low}, max {high}. "
                        "Was the input tokenized with this model's tokenizer?"
                    )
            else:  # no host sync on an accelerator: the device checks (and fails loudly on a bad id)
                torch._assert_async(((input >= 0) & (input < self.cfg.d_vocab)).all())
        return input.to(self.embed.W_E.device)

    @contextlib.contextmanager
    def fused_attention(self) -> Iterator[None]:
        """Within the block, attention uses torch's fused kernel wherever nothing needs its pattern.

        No sink and no hook at ``hook_attn_scores`` / ``hook_pattern``: the scores and pattern are
        then never written (about 10% of a CPU training step at d_model 256). The result equals
        the explicit computation to rounding, not bit for bit, so it is off outside this block.
        The trainer runs its steps in it.
        """
        attentions = [m for m in self.modules() if isinstance(m, Attention)]
        saved = [attn.fused for attn in attentions]
        for attn in attentions:
            attn.fused = True
        try:
            yield
        finally:
            for attn, flag in zip(attentions, saved):
                attn.fused = flag

    # ------------------------------------------------------------------ hooks and caching
    def run_with_cache(self, *model_args: Any, return_cache_object: bool = True, **kwargs: Any):
        """Run the model and cache activations; returns ``(output, ActivationCache)``.

        Takes the arguments of :meth:`transformer_lens.HookedRootModule.run_with_cache`
        (``names_filter``, ``device``, ``remove_batch_dim``, ``incl_bwd``, ...).
        """
        names = kwargs.get("names_filter")
        for name in [names] if isinstance(names, str) else names if isinstance(names, (list, tuple)) else []:
            if name not in self.hook_dict:  # a typo would otherwise cache nothing, silently
                raise UnknownNameError("hook point in names_filter", name, self.hook_dict)
        out, cache_dict = super().run_with_cache(*model_args, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        return out, SparseActivationCache(cache_dict, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

    def _enable_hook_with_name(self, name: str, hook: Callable, dir: Literal["fwd", "bwd"]) -> None:
        if name not in self.hook_dict:
            raise UnknownNameError("hook point", name, self.hook_dict)
        super()._enable_hook_with_name(name, hook, dir)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the forward in place, remembering which hooks were attached at that moment.

        ``torch.compile`` ignores forward hooks added after compilation; instead of failing
        silently, a forward with different hooks raises an error saying what to do.
        """
        self._compiled_with_hooks = self._active_hook_signature()
        super().compile(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check_compiled_hooks()  # here, outside the compiled region, so it always runs
        return super().__call__(*args, **kwargs)

    def _active_hook_signature(self) -> frozenset[str]:
        return frozenset(
            f"{name}:{id(h)}" for name, hp in self.hook_dict.items() for h in hp._forward_hooks.values()
        )

    def _check_compiled_hooks(self) -> None:
        if self._compiled_with_hooks is None:
            return
        if self._active_hook_signature() != self._compiled_with_hooks:
            raise RuntimeError(
                "hooks were added or removed after model.compile(); torch.compile would silently "
                "ignore them. Run hooked analyses on an uncompiled model (reload it, or compile after "
                "attaching permanent hooks)."
            )

    # ------------------------------------------------------------------ tokenizer helpers
    def set_tokenizer(self, tokenizer: Any) -> None:
        """Attach a Hugging Face tokenizer (used by ``to_tokens`` and friends, saved with the model)."""
        if len(tokenizer) > self.cfg.d_vocab:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model's d_vocab is {self.cfg.d_vocab}"
            )
        from sparselens.data.tokenizer_io import check_tokenizer_name

        # refuses a tokenizer named differently from cfg.tokenizer_name; records the name if unset
        self.cfg.tokenizer_name = check_tokenizer_name(tokenizer, self.cfg.tokenizer_name)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise RuntimeError(
                "no tokenizer is attached; pass tokenizer= to HookedSparseTransformer, call "
                "model.set_tokenizer(...), or load a model saved with one"
            )
        return self.tokenizer

    def to_tokens(self, text: Union[str, list[str]], prepend_bos: Optional[bool] = None) -> Int[Tensor, "batch pos"]:
        """Tokenize text to [batch pos]; a list is right-padded with the pad (end-of-text) token."""
        tok = self._require_tokenizer()
        texts = [text] if isinstance(text, str) else list(text)
        prepend_bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        if prepend_bos:
            texts = [tok.bos_token + t for t in texts]
        ids = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"]
        return ids.to(self.embed.W_E.device)

    def to_str_tokens(self, input: Union[str, Int[Tensor, "... pos"]], prepend_bos: Optional[bool] = None) -> list[str]:
        """The tokens of one text or one token sequence, as strings."""
        tok = self._require_tokenizer()
        tokens = self.to_tokens(input, prepend_bos)[0] if isinstance(input, str) else input
        tokens = torch.as_tensor(tokens)
        if tokens.ndim > 1:
            if tokens.shape[0] != 1:
                raise ValueError(f"to_str_tokens takes one sequence, got shape {tuple(tokens.shape)}")
            tokens = tokens[0]
        return [tok.decode([t]) for t in tokens.tolist()]

    def to_string(self, tokens: Int[Tensor, "... pos"]) -> Union[str, list[str]]:
        """Decode [pos] to a string or [batch pos] to a list of strings."""
        tok = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 1:
            return tok.decode(tokens.tolist())
        return [tok.decode(row) for row in tokens.tolist()]

    @torch.no_grad()
    def generate(
        self,
        input: TextOrTokens,
        max_new_tokens: int = 32,
        *,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        stop_at_eos: bool = True,
        seed: Optional[int] = None,
        fwd_hooks: Sequence[tuple[Union[str, Callable], Callable]] = (),
        prepend_bos: Optional[bool] = None,
    ) -> Union[str, Int[Tensor, "batch pos"]]:
        """Sample a continuation, one token at a time, through the ordinary forward pass.

        Every step is ``self(tokens)``: hooks already attached (``model.hooks(...)``, ``add_hook``)
        and ``fwd_hooks`` act on every step, so an ablated or patched model generates as itself.
        The last ``n_ctx`` tokens are the context (no KV cache: these models are small).

        Args:
            input: text (tokenized with :meth:`to_tokens`), or tokens ``[batch pos]`` / ``[pos]``.
            max_new_tokens: tokens to add.
            temperature: ``0`` for greedy decoding, else the logits are divided by it.
            top_k: sample among the ``top_k`` most likely tokens only.
            stop_at_eos: stop a row after it emits the end-of-text token (it is padded with that
                token afterwards) and stop when every row has.
            seed: seeds the sampling (default: torch's global generator).
            fwd_hooks: ``(name or filter, hook)`` pairs active during generation only.
            prepend_bos: for text input, as :meth:`to_tokens`.

        Returns:
            The prompt and continuation as a string for text input, else the tokens ``[batch pos + new]``.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
        if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= self.cfg.d_vocab):
            raise ValueError(f"top_k must be an integer in [1, d_vocab={self.cfg.d_vocab}], got {top_k!r}")
        tokens = self.to_tokens(input, prepend_bos) if isinstance(input, str) else self._as_tokens(input, True)
        eos = getattr(self.tokenizer, "eos_token_id", None) if stop_at_eos else None
        generator = None if seed is None else torch.Generator(device=tokens.device).manual_seed(seed)
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        with self.hooks(fwd_hooks=list(fwd_hooks)):
            for _ in range(max_new_tokens):
                logits = self(tokens[:, -self.cfg.n_ctx:])[:, -1].float()
                if temperature == 0:
                    chosen = logits.argmax(dim=-1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        floor = logits.topk(top_k, dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < floor, float("-inf"))
                    chosen = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]
                if eos is not None:
                    chosen = torch.where(done, torch.full_like(chosen, eos), chosen)
                    done |= chosen == eos
                tokens = torch.cat([tokens, chosen[:, None]], dim=1)
                if eos is not None and bool(done.all()):
                    break
        return str(self._require_tokenizer().decode(tokens[0].tolist())) if isinstance(input, str) else tokens

    def to_single_token(self, string: str) -> int:
        """The id of a string that must be exactly one token."""
        ids = self.to_tokens(string, prepend_bos=False)[0]
        if ids.numel() != 1:
            raise ValueError(f"{string!r} is {ids.numel()} tokens ({self.to_str_tokens(ids)}), not one")
        return int(ids[0])

    # ------------------------------------------------------------------ TransformerLens-shaped weights
    def _stack(self, getter: Callable[[TransformerBlock], Tensor]) -> Tensor:
        # nn.ModuleList iterates as Module; every entry of self.blocks is a TransformerBlock
        return torch.stack([getter(block) for block in self.blocks])  # type: ignore[arg-type]

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos  # AttributeError without a positional embedding

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        return self.unembed.b_U

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack(lambda b: b.attn.W_Q)

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack(lambda b: b.attn.W_K)

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack(lambda b: b.attn.W_V)

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack(lambda b: b.attn.W_O)

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack(lambda b: b.attn.b_Q)

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack(lambda b: b.attn.b_K)

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack(lambda b: b.attn.b_V)

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack(lambda b: b.attn.b_O)

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._stack(lambda b: b.mlp.W_in)

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._stack(lambda b: b.mlp.W_out)

    @property
    def b_in(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._stack(lambda b: b.mlp.b_in)

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack(lambda b: b.mlp.b_out)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: Union[str, Path]) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) to a directory."""
        from sparselens.model.checkpoint import save_pretrained

        return save_pretrained(self, path)

    @classmethod
    def from_pretrained(
        cls, path_or_name: Union[str, Path], device: Optional[str] = None, *, dtype: Any = None, tokenizer: Any = "auto"
    ) -> "HookedSparseTransformer":
        """Load a saved model directory, a released ``beeg_config.json`` checkpoint, or a registered name.

        Names are listed by ``sparselens.pretrained.list_models()``. The model comes with its own
        tokenizer (``tokenizer="auto"``; a released model gets the released one); ``dtype``
        converts the weights tensor by tensor. See ``sparselens.pretrained.load_pretrained``.
        """
        from sparselens.pretrained import load_pretrained  # sparselens.pretrained imports this module

        return load_pretrained(path_or_name, device=device, dtype=dtype, tokenizer=tokenizer)

    # ------------------------------------------------------------------ summaries
    def _repr_html_(self) -> str:
        """Jupyter: the architecture, the weight sparsity and the nodes per layer and site."""
        from sparselens import html_tables

        cfg = self.cfg
        with torch.no_grad():
            matrices = [p for p in self.parameters() if p.ndim == 2]
            nonzero = sum(int((p != 0).sum()) for p in matrices)
            total = sum(p.numel() for p in matrices)
        rows = [
            ("layers, d_model", f"{cfg.n_layers}, {cfg.d_model}"), ("heads x d_head", f"{cfg.n_heads} x {cfg.d_head}"),
            ("d_mlp, d_vocab, n_ctx", f"{cfg.d_mlp}, {cfg.d_vocab}, {cfg.n_ctx}"),
            ("AbsTopK", f"afrac {cfg.afrac} at {', '.join(cfg.abstopk_sites)}" if cfg.afrac else "none"),
            ("matrix weights nonzero", f"{nonzero:,} of {total:,} ({nonzero / max(total, 1):.4f})"),
            ("tokenizer", str(cfg.tokenizer_name)), ("hook points", str(len(self.hook_dict))),
            ("nodes", f"{self.node_registry.n_nodes:,} in {len(self.node_sites)} sites"),
        ]
        counts = {site.name: site.n_nodes for site in self.node_sites}
        return (html_tables.heading("HookedSparseTransformer") + html_tables.key_values(rows)
                + html_tables.site_grid(counts))

    def summary(self) -> str:
        """A readable table of the architecture, hook points and node sites."""
        cfg = self.cfg
        lines = [
            f"HookedSparseTransformer: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads x "
            f"d_head {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}, n_ctx {cfg.n_ctx}",
            f"  AbsTopK afrac={cfg.afrac} at {', '.join(cfg.abstopk_sites) if cfg.afrac else 'no sites'}; "
            f"sink={cfg.attn_sink}, bigram={cfg.bigram_table}, positional={cfg.positional_embedding_type}",
            f"  parameters: {sum(p.numel() for p in self.parameters()):,}; "
            f"nonzero: {sum(int((p != 0).sum()) for p in self.parameters()):,}",
            f"  {len(self.hook_dict)} hook points, {len(self.node_sites)} node sites, "
            f"{self.node_registry.n_nodes:,} nodes",
            "",
            f"  {'node site':<14}{'hook point':<28}{'role':<16}{'nodes':>7}",
        ]
        for site in self.node_sites:
            lines.append(f"  {site.name:<14}{site.hook_name:<28}{site.kind.role:<16}{site.n_nodes:>7}")
        lines += ["", "  other hook points:"]
        node_hooks = {s.hook_name for s in self.node_sites}
        others = [n for n in self.hook_dict if n not in node_hooks and not n.startswith("blocks.")]
        per_layer = sorted({n.split(".", 2)[2] for n in self.hook_dict if n.startswith("blocks.0.")} - {
            h.split(".", 2)[2] for h in node_hooks if h.startswith("blocks.0.")
        })
        lines.append("    " + ", ".join(others))
        lines.append("    per layer: blocks.{l}." + ", blocks.{l}.".join(per_layer))
        return "\n".join(lines)
