"""The connector's input vector: the image latent, with the classifier's logits appended when the
connector was built for them (V-3). Shapes are checked here so every connector fails the same way."""

from __future__ import annotations

import torch
from torch import nn

from engine.model_configs import ConnectorConfig, SpatialPoolingConfig


class Connector(nn.Module):
    """What every connector shares: its config and the facts the report generator asks of it."""

    def __init__(self, config: ConnectorConfig | SpatialPoolingConfig):
        super().__init__()
        self.config = config

    @property
    def prefix_len(self) -> int:
        return self.config.prefix_len

    @property
    def uses_logits(self) -> bool:
        return self.config.n_labels > 0


def connector_input(
    config: ConnectorConfig, embedding: torch.Tensor, logits: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    if embedding.dim() != 2 or embedding.shape[-1] != config.d_embed:
        raise ValueError(f"expected a (batch, {config.d_embed}) latent, got shape {tuple(embedding.shape)}")
    if config.n_labels == 0:
        return embedding.to(dtype)
    if logits is None:
        raise ValueError(f"this connector takes {config.n_labels} classifier logits beside the latent; none given")
    if logits.shape != (embedding.shape[0], config.n_labels):
        raise ValueError(
            f"expected ({embedding.shape[0]}, {config.n_labels}) logits, got shape {tuple(logits.shape)}"
        )
    # Soft logits are a frozen prior: no gradient flows back into the classifier.
    return torch.cat((embedding, logits.detach()), dim=-1).to(dtype)
