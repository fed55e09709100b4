"""``attention_patterns``: chosen heads' attention on one prompt, the full model beside the circuit.

Examples:
    >>> attention_patterns(model, task.batch(n=2, split="test"), heads=[(0, 1)], circuit=circuit)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from sparselens.viz.analysis import TokensLike, as_prompts, check_rows, model_and_circuit
from sparselens.viz.plot import STYLE, Mounts, Plot

if TYPE_CHECKING:
    from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
    from sparselens.prune.circuit import Circuit

SINK_TOKEN = "⟨sink⟩"


def _check_heads(
    model: "HookedSparseTransformer", heads: Union[tuple[int, int], Sequence[tuple[int, int]]]
) -> list[tuple[int, int]]:
    cfg = model.cfg
    # one (layer, head) pair passes as itself; every item is checked below, whatever it is
    items: Sequence[Any] = heads
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        items = [heads]
    out = []
    for item in items:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise TypeError(f"heads must be (layer, head) pairs, e.g. [(0, 1)]; got {item!r}") from None
        if not 0 <= layer < cfg.n_layers:
            raise IndexError(f"head ({layer}, {head}): layer {layer} is out of range; the model has {cfg.n_layers} layers (0..{cfg.n_layers - 1})")
        if not 0 <= head < cfg.n_heads:
            raise IndexError(f"head ({layer}, {head}): head {head} is out of range; each layer has {cfg.n_heads} heads (0..{cfg.n_heads - 1})")
        out.append((layer, head))
    if not out:
        raise ValueError("heads is empty; pass (layer, head) pairs, e.g. heads=[(0, 1)]")
    return out


def attention_patterns(
    model: "HookedSparseTransformer",
    tokens: TokensLike,
    heads: Sequence[tuple[int, int]],
    circuit: Optional["Circuit"] = None,
    prompt: int = 0,
) -> Plot:
    """Attention patterns of chosen heads on one prompt: the full model, and the circuit beside it.

    With an attention sink (``cfg.attn_sink``) the real keys' pattern sums to one minus the sink's
    share, so each pattern gets an extra first key column ``⟨sink⟩`` holding the sink's share
    (``hook_sink``): every query row then sums to 1. The ``⟨sink⟩`` row is not a query and stays 0.

    Args:
        model: the model.
        tokens: text, token ids ``[pos]`` / ``[batch, pos]``, or a TaskBatch (rows end at ``read_pos``).
            The whole batch runs (resample ablation needs the other prompts); ``prompt`` is shown.
        heads: ``(layer, head)`` pairs.
        circuit: a :class:`~sparselens.prune.Circuit` of this model, shown beside the full model.
        prompt: which row of the batch to show.

    Returns:
        A :class:`Plot` of circuitsvis ``AttentionHeads``. ``plot.data`` holds ``tokens`` (labels,
        ``⟨sink⟩`` first if the model has a sink), ``heads``, ``full`` and ``circuit`` (``None``
        without a circuit): patterns ``[n_heads_shown, key_rows, key_rows]`` as displayed.

    Raises:
        IndexError: a layer, head or prompt index out of range.
        ValueError: too many tokens; a circuit of another model; plain tokens with resample ablation.
    """
    heads = _check_heads(model, heads)
    prompts = as_prompts(model, tokens)
    (row,) = check_rows([prompt], prompts.tokens.shape[0])
    n = prompts.lengths[row]
    sink = bool(model.cfg.attn_sink)
    layers = sorted({layer for layer, _ in heads})
    names = [f"blocks.{l}.attn.hook_pattern" for l in layers] + ([f"blocks.{l}.attn.hook_sink" for l in layers] if sink else [])
    runs = model_and_circuit(model, prompts.batch, circuit, names)

    def shown(acts: dict[str, Tensor]) -> Float[Tensor, "heads keys keys"]:
        pats = torch.stack([acts[f"blocks.{l}.attn.hook_pattern"][row, h, :n, :n] for l, h in heads]).float().cpu()
        if not sink:
            return pats
        out = torch.zeros(len(heads), n + 1, n + 1)
        out[:, 1:, 1:] = pats
        out[:, 1:, 0] = torch.stack([acts[f"blocks.{l}.attn.hook_sink"][row, h, :n] for l, h in heads]).float().cpu()
        return out

    str_tokens = ([SINK_TOKEN] if sink else []) + model.to_str_tokens(prompts.tokens[row, :n])
    head_names = [f"L{l}H{h}" for l, h in heads]
    full = shown(runs.full)
    in_circuit = shown(runs.circuit) if runs.circuit is not None else None
    data = {"tokens": str_tokens, "heads": heads, "full": full, "circuit": in_circuit}

    mount = Mounts()

    def panel(title: str, note: str, pattern: Tensor) -> str:
        props = {"attention": pattern, "tokens": str_tokens, "attentionHeadNames": head_names,
                 "maxValue": 1.0, "minValue": 0.0, "maskUpperTri": True}
        return (f'<div style="flex: 1 1 420px; min-width: 0;"><h3 style="margin: 4px 0;">{html.escape(title)}</h3>'
                f'<div style="color: #555;">{note}</div>{mount("AttentionHeads", props)}</div>')

    sink_note = (
        f"<b>{SINK_TOKEN}</b> (first key column) is the attention sink's share: attention given to no token. "
        "With it every query row sums to 1. The ⟨sink⟩ row is not a query (left 0)."
        if sink else "This model has no attention sink: each query row sums to 1 over the tokens."
    )
    panels = [panel("Full model", "", full)]
    if circuit is not None:
        assert in_circuit is not None  # model_and_circuit runs a circuit it is given
        d_head = model.cfg.d_head
        kept = "; ".join(
            f"L{l}H{h}: " + ", ".join(
                f"{kind} {sum(1 for i in circuit.kept.get(f'L{l}.{kind}', []) if i // d_head == h)}/{d_head}"
                for kind in ("q", "k", "v"))
            for l, h in heads
        )
        panels.append(panel(f"Circuit ({circuit.n_nodes} nodes, {circuit.ablation} ablation)",
                            html.escape(f"channels kept: {kept}"), in_circuit))
    body = (f'<div style="{STYLE}"><div style="margin-bottom: 6px;">Attention of {", ".join(head_names)} on prompt '
            f'{row} ({n} tokens). {sink_note}</div><div style="display: flex; flex-wrap: wrap; gap: 16px;">'
            f'{"".join(panels)}</div></div>')
    return Plot(body, mount.items, data, title=f"attention patterns {', '.join(head_names)}")
