"""Linear prefix connectors: the lightweight alternatives to the TransformerConnector.

`LinearConnector` with prefix_len = 1 is R2GenGPT's visual alignment layer on one latent vector
(Linear(512 → d_llm): 512·2048 + 2048 = 1,050,624 parameters with LLaMA-3.2-1B, the paper's
"1.05M (linear)"). With prefix_len = P it is the supplement's "linear + prefix" variant: one Linear
to P·d_llm reshaped to P prefix tokens, no transformer ("1.05M×10" for P = 10: 10,506,240)."""

from __future__ import annotations

import torch
from torch import nn

from engine.connectors.inputs import Connector, connector_input
from engine.model_configs import ConnectorConfig


class LinearConnector(Connector):
    def __init__(self, config: ConnectorConfig):
        super().__init__(config)
        self.linear = nn.Linear(config.d_in, config.prefix_len * config.d_llm)

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        x = connector_input(self.config, embedding, logits, self.linear.weight.dtype)
        return self.linear(x).view(x.shape[0], self.config.prefix_len, self.config.d_llm)


class LinearPrefixConnector(LinearConnector):
    """The same network, named for the supplement's "linear + prefix" variant (prefix_len > 1)."""
