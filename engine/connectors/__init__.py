"""Prefix projection networks ("connectors"): (latent [, logits]) → (B, prefix_len, d_llm).

`CONNECTORS` is the only place a connector name becomes a module:
    transformer    TransformerConnector (the method; V-1, V-2, V-3)
    linear         LinearConnector (one Linear; prefix_len tokens, 1 for R2GenGPT's alignment layer)
    linear-prefix  LinearPrefixConnector (the supplement's linear + prefix variant)
    spatial-pooling  SpatialPoolingConnector (M3D-LaMed's projector: encoder patch tokens → LLM tokens;
                     its own config, SpatialPoolingConfig)
"""

from __future__ import annotations

from torch import nn

from engine.connectors.linear import LinearConnector, LinearPrefixConnector
from engine.connectors.spatial_pooling import SpatialPoolingConnector
from engine.connectors.transformer import TransformerConnector
from engine.model_configs import ConnectorConfig, SpatialPoolingConfig
from engine.registry import Registry

CONNECTORS: Registry[nn.Module] = Registry("connector")
CONNECTORS.register("transformer")(TransformerConnector)
CONNECTORS.register("linear")(LinearConnector)
CONNECTORS.register("linear-prefix")(LinearPrefixConnector)
CONNECTORS.register("spatial-pooling")(SpatialPoolingConnector)


def build_connector(config: ConnectorConfig | SpatialPoolingConfig) -> nn.Module:
    return CONNECTORS.build(config.kind, config)


__all__ = [
    "CONNECTORS",
    "ConnectorConfig",
    "LinearConnector",
    "LinearPrefixConnector",
    "SpatialPoolingConfig",
    "SpatialPoolingConnector",
    "TransformerConnector",
    "build_connector",
]
