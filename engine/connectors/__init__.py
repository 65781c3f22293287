"""Prefix projection networks ("connectors"): (latent [, logits]) → (B, prefix_len, d_llm).

`CONNECTORS` is the only place a connector name becomes a module:
    transformer    TransformerConnector (the method; V-1, V-2, V-3)
    linear         LinearConnector (one Linear; prefix_len tokens, 1 for R2GenGPT's alignment layer)
    linear-prefix  LinearPrefixConnector (the supplement's linear + prefix variant)
"""

from __future__ import annotations

from torch import nn

from engine.connectors.linear import LinearConnector, LinearPrefixConnector
from engine.connectors.transformer import TransformerConnector
from engine.model_configs import ConnectorConfig
from engine.registry import Registry

CONNECTORS: Registry[nn.Module] = Registry("connector")
CONNECTORS.register("transformer")(TransformerConnector)
CONNECTORS.register("linear")(LinearConnector)
CONNECTORS.register("linear-prefix")(LinearPrefixConnector)


def build_connector(config: ConnectorConfig) -> nn.Module:
    return CONNECTORS.build(config.kind, config)


__all__ = [
    "CONNECTORS",
    "ConnectorConfig",
    "LinearConnector",
    "LinearPrefixConnector",
    "TransformerConnector",
    "build_connector",
]
