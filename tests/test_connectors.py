"""Prefix projection networks: shapes, the paper's parameter counts, V-2 vs V-3, detached logits."""

import math

import pytest
import torch

from engine.connectors import (
    CONNECTORS,
    ConnectorConfig,
    LinearConnector,
    TransformerConnector,
    build_connector,
)
from engine.errors import ConfigError

LLAMA_1B_HIDDEN = 2048  # LLaMA-3.2-1B hidden size


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_connector(**kwargs):
    with torch.device("meta"):
        return build_connector(ConnectorConfig(**kwargs))


def test_transformer_connector_counts_match_table_4_with_llama_3_2_1b_dims():
    v2 = meta_connector(kind="transformer", n_labels=0, d_llm=LLAMA_1B_HIDDEN)
    v3 = meta_connector(kind="transformer", n_labels=18, d_llm=LLAMA_1B_HIDDEN)
    assert round(n_params(v2) / 1e6, 2) == 279.09  # Table 4, V-2
    assert round(n_params(v3) / 1e6, 2) == 279.46  # Table 4, V-3


def test_v3_differs_from_v2_only_by_the_18_logit_inputs_of_the_first_linear():
    clip_len, d = 10, LLAMA_1B_HIDDEN
    v2 = meta_connector(n_labels=0, d_llm=d, clip_len=clip_len)
    v3 = meta_connector(n_labels=18, d_llm=d, clip_len=clip_len)
    assert n_params(v3) - n_params(v2) == 18 * clip_len * d
    shapes2 = {k: tuple(v.shape) for k, v in v2.state_dict().items()}
    shapes3 = {k: tuple(v.shape) for k, v in v3.state_dict().items()}
    assert shapes2.keys() == shapes3.keys()
    differing = {k for k in shapes2 if shapes2[k] != shapes3[k]}
    assert differing == {"linear.weight"}
    assert shapes2["linear.weight"] == (clip_len * d, 512)
    assert shapes3["linear.weight"] == (clip_len * d, 512 + 18)


def test_linear_connectors_match_the_supplement_counts():
    linear = meta_connector(kind="linear", prefix_len=1, d_llm=LLAMA_1B_HIDDEN)
    linear_prefix = meta_connector(kind="linear-prefix", prefix_len=10, d_llm=LLAMA_1B_HIDDEN)
    assert n_params(linear) == 512 * 2048 + 2048  # one Linear(512 → 2048): "1.05M"
    assert n_params(linear_prefix) == 10 * n_params(linear)  # "1.05M×10"
    assert isinstance(linear, LinearConnector)


def test_transformer_connector_keeps_clipcap_checkpoint_names():
    connector = build_connector(ConnectorConfig(d_llm=32, n_layers=2, n_heads=4))
    keys = set(connector.state_dict())
    for key in (
        "linear.weight", "linear.bias", "prefix_const",
        "transformer.layers.1.norm1.weight", "transformer.layers.1.attn.to_queries.weight",
        "transformer.layers.1.attn.to_keys_values.weight", "transformer.layers.1.attn.project.bias",
        "transformer.layers.1.norm2.bias", "transformer.layers.1.mlp.fc1.weight", "transformer.layers.1.mlp.fc2.bias",
    ):
        assert key in keys, key
    assert "transformer.layers.0.attn.to_queries.bias" not in keys  # ClipCap: no q/kv bias
    assert connector.transformer.layers[0].mlp.fc1.out_features == 2 * 32  # MLP ratio 2


def test_attention_is_plain_scaled_dot_product_self_attention():
    torch.manual_seed(0)
    connector = build_connector(ConnectorConfig(d_llm=16, n_layers=1, n_heads=2))
    attn = connector.transformer.layers[0].attn
    x = torch.randn(3, 5, 16)
    q = attn.to_queries(x).view(3, 5, 2, 8)
    kv = attn.to_keys_values(x).view(3, 5, 2, 2, 8)
    k, v = kv[:, :, 0], kv[:, :, 1]
    weights = torch.softmax(torch.einsum("bnhd,bmhd->bnmh", q, k) / math.sqrt(8), dim=2)
    by_hand = attn.project(torch.einsum("bnmh,bmhd->bnhd", weights, v).reshape(3, 5, 16))
    assert torch.allclose(attn(x), by_hand, atol=1e-5)


def test_prefix_shape_and_dependence_on_inputs():
    torch.manual_seed(0)
    connector = build_connector(ConnectorConfig(d_embed=12, n_labels=3, d_llm=16, prefix_len=4, clip_len=6,
                                                n_layers=2, n_heads=2))
    assert isinstance(connector, TransformerConnector)
    emb, logits = torch.randn(5, 12), torch.randn(5, 3)
    prefix = connector(emb, logits)
    assert prefix.shape == (5, 4, 16)
    changed = logits.clone()
    changed[0, 1] += 3.0
    moved = (connector(emb, changed) - prefix).abs().amax(dim=(1, 2))
    assert moved[0] > 1e-4 and torch.all(moved[1:] == 0)  # cases do not leak into each other


def test_logits_are_detached_and_validated():
    connector = build_connector(ConnectorConfig(d_embed=8, n_labels=3, d_llm=16, n_layers=1, n_heads=2))
    emb = torch.randn(2, 8, requires_grad=True)
    logits = torch.randn(2, 3, requires_grad=True)
    connector(emb, logits).sum().backward()
    assert emb.grad is not None and logits.grad is None  # no gradient into the classifier
    with pytest.raises(ValueError, match="logits"):
        connector(emb)
    with pytest.raises(ValueError, match="logits"):
        connector(emb, torch.randn(2, 4))
    with pytest.raises(ValueError, match="latent"):
        connector(torch.randn(2, 9), logits)


def test_registry_and_config_errors_are_typed():
    assert {"transformer", "linear", "linear-prefix"} <= set(CONNECTORS.names())
    with pytest.raises(ConfigError, match="unknown connector"):
        build_connector(ConnectorConfig(kind="mlp"))
    with pytest.raises(ConfigError, match="unknown key .width. in ConnectorConfig"):
        ConnectorConfig.from_dict({"kind": "linear", "width": 3})
    config = ConnectorConfig(kind="linear", n_labels=18, prefix_len=3)
    assert ConnectorConfig.from_dict(config.to_dict()) == config
