import pytest
from transformer_lens.config import TransformerLensConfig

from sparselens import SparseTransformerConfig
from sparselens.config import ABSTOPK_SITES


def test_defaults_follow_method():
    cfg = SparseTransformerConfig(n_layers=2, d_model=64, n_ctx=32)
    assert isinstance(cfg, TransformerLensConfig)
    assert (cfg.d_head, cfg.n_heads, cfg.d_mlp, cfg.d_vocab) == (16, 4, 256, 2048)
    assert cfg.afrac == 0.25 and cfg.abstopk_sites == ABSTOPK_SITES
    assert cfg.positional_embedding_type == "none" and cfg.use_bias and not cfg.attn_sink
    assert cfg.abstopk_k("neuron", 256) == 64
    assert SparseTransformerConfig(n_layers=1, d_model=64, n_ctx=8, afrac=None).abstopk_k("q", 64) is None


def test_round_trip_through_dict():
    cfg = SparseTransformerConfig(n_layers=3, d_model=48, n_ctx=16, attn_sink=True, abstopk_sites=("q", "neuron"))
    again = SparseTransformerConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=60), r"d_model \(60\) is not divisible by d_head \(16\)"),
        (dict(afrac=1.5), r"afrac must be in \(0, 1\]"),
        (dict(afrac=0.0), r"afrac must be in"),
        (dict(abstopk_sites=("nueron",)), "did you mean 'neuron'"),
        (dict(act_fn="gleu"), "did you mean 'gelu'"),
        (dict(positional_embedding_type="rotary"), "positional_embedding_type"),
        (dict(n_layers=0), "n_layers must be a positive int"),
        (dict(normalization_type="LN"), "must be 'RMS'"),
        (dict(eps=0.0), "eps must be positive"),
    ],
)
def test_invalid_configs_name_the_field(kwargs, match):
    base = dict(n_layers=2, d_model=64, n_ctx=16)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SparseTransformerConfig(**base)


def test_unknown_field_in_dict_is_named():
    cfg = SparseTransformerConfig(n_layers=1, d_model=32, n_ctx=8).to_dict()
    cfg["n_layer"] = 3
    with pytest.raises(ValueError, match="did you mean 'n_layers'"):
        SparseTransformerConfig.from_dict(cfg)
