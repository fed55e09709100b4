"""An independent plain-torch forward pass over nanoGPT-style (released-format) weights.

Written from METHOD.md section 1, not from sparselens's model code, so that comparing the two
checks the model. AbsTopK here uses a stable sort (a different algorithm from the library's
threshold selection) with the same lowest-index tie-break.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RELEASED_SITE_NAMES = {
    "attn_in": "attn_in", "q": "attn_q", "k": "attn_k", "v": "attn_v",
    "attn_out": "attn_out", "mlp_in": "mlp_in", "neuron": "mlp_neuron", "mlp_out": "mlp_out",
}


def abstopk_by_sort(x: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(x.abs(), dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(x).scatter(-1, order, x.gather(-1, order))


def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


def forward(sd: dict, beeg: dict, tokens: torch.Tensor, eps: float, cache: dict | None = None) -> torch.Tensor:
    """Logits [batch pos vocab] of a released-format checkpoint.

    ``cache``, if given, is filled with this forward's own intermediates, keyed ``(layer, name)``:
    ``attn_in``, ``q``/``k``/``v`` (after AbsTopK) and ``z`` [batch pos head d_head], ``scores``
    (scaled, -inf on future keys) and ``weights`` [batch head query key], ``sink`` [batch head
    query] when the model has a sink, ``attn_out``, ``mlp_in``, ``mlp_pre`` (before the
    activation), ``mlp_post`` (after it and AbsTopK), ``mlp_out`` and ``resid_post``.
    """
    sites = set(beeg.get("afrac_loctypes", "").split(","))
    afrac = beeg.get("afrac")
    act_fn = ACTIVATIONS[beeg.get("activation_type", "gelu")]
    cache = {} if cache is None else cache

    def sparsify(x, site):
        return abstopk_by_sort(x, int(afrac * x.shape[-1])) if afrac and site in sites else x

    n_head, d_head = beeg["n_head"], beeg["d_head"]
    batch, n_pos = tokens.shape
    x = sd["transformer.wte.weight"][tokens]
    if "transformer.wpe.weight" in sd:
        x = x + sd["transformer.wpe.weight"][:n_pos]
    future = torch.ones(n_pos, n_pos, dtype=torch.bool).triu(1)
    for layer in range(beeg["n_layer"]):
        p = f"transformer.h.{layer}."
        h = sparsify(rms(x, sd[p + "ln_1.weight"], eps), "attn_in")
        cache[layer, "attn_in"] = h
        qkv = F.linear(h, sd[p + "attn.c_attn.weight"], sd.get(p + "attn.c_attn.bias"))
        q, k, v = qkv.split(n_head * d_head, dim=-1)
        q, k, v = (sparsify(t, s).view(batch, n_pos, n_head, d_head).transpose(1, 2)
                   for t, s in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v")))
        for name, t in (("q", q), ("k", k), ("v", v)):
            cache[layer, name] = t.transpose(1, 2)  # [batch pos head d_head]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d_head)
        scores = scores.masked_fill(future, float("-inf"))
        cache[layer, "scores"] = scores
        if beeg.get("sink"):
            sink = sd[p + "attn.attn_imp.sink_logit"].view(1, n_head, 1, 1).expand(batch, n_head, n_pos, 1)
            with_sink = torch.cat([sink, scores], dim=-1).softmax(-1)
            cache[layer, "sink"] = with_sink[..., 0]
            weights = with_sink[..., 1:]
        else:
            weights = scores.softmax(-1)
        cache[layer, "weights"] = weights
        z = (weights @ v).transpose(1, 2)  # [batch pos head d_head]
        cache[layer, "z"] = z
        y = z.reshape(batch, n_pos, n_head * d_head)
        attn_out = sparsify(F.linear(y, sd[p + "attn.c_proj.weight"], sd.get(p + "attn.c_proj.bias")), "attn_out")
        cache[layer, "attn_out"] = attn_out
        x = x + attn_out
        h = sparsify(rms(x, sd[p + "ln_2.weight"], eps), "mlp_in")
        cache[layer, "mlp_in"] = h
        pre = F.linear(h, sd[p + "mlp.c_fc.weight"], sd.get(p + "mlp.c_fc.bias"))
        cache[layer, "mlp_pre"] = pre
        act = sparsify(act_fn(pre), "mlp_neuron")
        cache[layer, "mlp_post"] = act
        mlp_out = sparsify(F.linear(act, sd[p + "mlp.c_proj.weight"], sd.get(p + "mlp.c_proj.bias")), "mlp_out")
        cache[layer, "mlp_out"] = mlp_out
        x = x + mlp_out
        cache[layer, "resid_post"] = x
    x = rms(x, sd["transformer.ln_f.weight"], eps)
    logits = x @ sd.get("lm_head.weight", sd["transformer.wte.weight"]).T
    logits = logits + sd.get("final_logits_bias", 0)
    if beeg.get("enable_bigram_table"):
        logits = logits + sd["bigram_table"][tokens]
    return logits


def random_released_checkpoint(seed: int = 0, n_layer: int = 2, d_model: int = 32, n_head: int = 2, d_head: int = 16,
                               vocab: int = 64, block: int = 16, sink: bool = True, bigram: bool = True,
                               wpe: bool = True, tied: bool = False,
                               loctypes: str = "attn_in,attn_q,attn_k,attn_v,attn_out,mlp_in,mlp_neuron,mlp_out"):
    """A random released-format (beeg_config, state_dict) pair; weights are sparse-ish like a real one."""
    gen = torch.Generator().manual_seed(seed)

    def w(*shape, scale=0.3):
        t = torch.randn(*shape, generator=gen) * scale
        return t * (torch.rand(*shape, generator=gen) < 0.5)  # half the weights zero

    d_mlp = 4 * d_model
    beeg = {
        "block_size": block, "vocab_size": vocab, "n_layer": n_layer, "n_head": n_head, "d_head": d_head,
        "d_model": d_model, "dropout": 0.0, "bias": True, "ln_bias": False, "rms_norm": True,
        "residual_activation_type": "identity", "activation_type": "gelu", "afrac": 0.25,
        "afrac_loctypes": loctypes, "tied_unembed": tied, "tokenizer_name": "tinypython_2k", "n_mlp": d_mlp,
        "enable_bigram_table": bigram, "learnable_bigram_table": bigram, "d_pos_emb": None, "sink": sink,
        "flash": True, "grad_checkpointing": False, "bigram_table_rank": None, "pfrac": 0.01,
    }
    sd = {"transformer.wte.weight": w(vocab, d_model, scale=1.0), "transformer.ln_f.weight": 1 + w(d_model, scale=0.1)}
    if wpe:
        sd["transformer.wpe.weight"] = w(block, d_model)
    if not tied:
        sd["lm_head.weight"] = w(vocab, d_model)
    sd["final_logits_bias"] = w(vocab)
    if bigram:
        sd["bigram_table"] = w(vocab, vocab)
    d_qkv = n_head * d_head
    for l in range(n_layer):
        p = f"transformer.h.{l}."
        sd[p + "ln_1.weight"] = 1 + w(d_model, scale=0.1)
        sd[p + "ln_2.weight"] = 1 + w(d_model, scale=0.1)
        sd[p + "attn.c_attn.weight"] = w(3 * d_qkv, d_model)
        sd[p + "attn.c_attn.bias"] = w(3 * d_qkv, scale=0.05)
        sd[p + "attn.c_proj.weight"] = w(d_model, d_qkv)
        sd[p + "attn.c_proj.bias"] = w(d_model, scale=0.05)
        sd[p + "mlp.c_fc.weight"] = w(d_mlp, d_model)
        sd[p + "mlp.c_fc.bias"] = w(d_mlp, scale=0.05)
        sd[p + "mlp.c_proj.weight"] = w(d_model, d_mlp)
        sd[p + "mlp.c_proj.bias"] = w(d_model, scale=0.05)
        if sink:
            sd[p + "attn.attn_imp.sink_logit"] = torch.randn(n_head, generator=gen)
    return beeg, sd


def export_to_released(model) -> tuple[dict, dict]:
    """Write a sparselens model's weights in the released nanoGPT layout (the inverse of the loader)."""
    cfg = model.cfg
    beeg = {
        "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "d_head": cfg.d_head, "afrac": cfg.afrac,
        "afrac_loctypes": ",".join(RELEASED_SITE_NAMES[s] for s in cfg.abstopk_sites),
        "sink": cfg.attn_sink, "enable_bigram_table": cfg.bigram_table, "activation_type": cfg.act_fn,
    }
    sd = {"transformer.wte.weight": model.W_E, "transformer.ln_f.weight": model.ln_final.w,
          "lm_head.weight": model.W_U.T, "final_logits_bias": model.b_U}
    if cfg.positional_embedding_type == "learned":
        sd["transformer.wpe.weight"] = model.W_pos
    if cfg.bigram_table:
        sd["bigram_table"] = model.bigram.table
    for l, block in enumerate(model.blocks):
        p = f"transformer.h.{l}."
        # From the TransformerLens-shaped views, so the test checks those too.
        to_rows = lambda W: W.permute(0, 2, 1).reshape(cfg.n_heads * cfg.d_head, cfg.d_model)  # noqa: E731
        sd[p + "attn.c_attn.weight"] = torch.cat([to_rows(block.attn.W_Q), to_rows(block.attn.W_K), to_rows(block.attn.W_V)])
        sd[p + "attn.c_proj.weight"] = block.attn.W_O.reshape(-1, cfg.d_model).T
        sd[p + "mlp.c_fc.weight"] = block.mlp.W_in.T
        sd[p + "mlp.c_proj.weight"] = block.mlp.W_out.T
        if cfg.use_bias:  # without biases the keys are absent, as in a bias=False nanoGPT checkpoint
            sd[p + "attn.c_attn.bias"] = torch.cat([block.attn.b_Q.flatten(), block.attn.b_K.flatten(), block.attn.b_V.flatten()])
            sd[p + "attn.c_proj.bias"] = block.attn.b_O
            sd[p + "mlp.c_fc.bias"] = block.mlp.b_in
            sd[p + "mlp.c_proj.bias"] = block.mlp.b_out
        sd[p + "ln_1.weight"] = block.ln1.w
        sd[p + "ln_2.weight"] = block.ln2.w
        if cfg.attn_sink:
            sd[p + "attn.attn_imp.sink_logit"] = block.attn.sink_logit
    return beeg, {k: v.detach().clone() for k, v in sd.items()}
