"""Prefix projection networks ("connectors"): (latent [, logits]) → (B, prefix_len, d_llm).

`CONNECTORS` is the only place a connector name becomes a module:
    transformer    TransformerMapper (the method; V-1, V-2, V-3)
    linear         LinearMapper (one Linear; prefix_len tokens, 1 for R2GenGPT's alignment layer)
    linear-prefix  LinearPrefixMapper (the supplement's linear + prefix variant)
"""

from __future__ import annotations

from torch import nn

from engine.model_configs import ConnectorConfig
from engine.connectors.linear_mapper import LinearMapper, LinearPrefixMapper
from engine.connectors.transformer_mapper import TransformerMapper
from engine.registry import Registry

CONNECTORS: Registry[nn.Module] = Registry("connector")
CONNECTORS.register("transformer")(TransformerMapper)
CONNECTORS.register("linear")(LinearMapper)
CONNECTORS.register("linear-prefix")(LinearPrefixMapper)


def build_connector(config: ConnectorConfig) -> nn.Module:
    return CONNECTORS.build(config.kind, config)


__all__ = [
    "CONNECTORS",
    "ConnectorConfig",
    "LinearMapper",
    "LinearPrefixMapper",
    "TransformerMapper",
    "build_connector",
]
