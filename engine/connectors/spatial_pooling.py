"""SpatialPoolingConnector: M3D-LaMed's SpatialPoolingProjector, encoder patch tokens → LLM tokens.

A port of `LaMed/src/model/multimodal_projector/spatial_pooling_projector.py` (M3D commit 63e7200)
with its key names (`projector.0`, `projector.2`; `model.mm_projector.projector.*` in a LaMed
checkpoint, read by engine.encoders.m3d_checkpoint.load_m3d_projector):

    tokens (B, N, d), N = D'·H'·W' in (d, h, w) row-major order (the ViT's patch order; cls dropped)
    → grid (B, d, D', H', W') → avg_pool3d(pool, stride pool) → flatten (d, h, w) → (B, n, d)
    → Linear(d → L), exact GELU, Linear(L → L)                       (B, n, L)   n = 256 at full size
    [+ logit tokens: Linear(n_labels → k·L) of the classifier logits, appended: (B, n + k, L)]

Parameters at full size: 768·L + L + L² + L = 11,802,624 for Phi-3's L = 3072, 19,931,136 for 4096.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.connectors.inputs import Connector
from engine.model_configs import SpatialPoolingConfig


class SpatialPoolingConnector(Connector):
    def __init__(self, config: SpatialPoolingConfig):
        super().__init__(config)
        self.projector = nn.Sequential(nn.Linear(config.d_embed, config.d_llm), nn.GELU(),
                                       nn.Linear(config.d_llm, config.d_llm))
        self.logit_tokens = (nn.Linear(config.n_labels, config.logit_tokens * config.d_llm)
                             if config.n_labels else None)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, d) patch tokens → (B, n, d) tokens of the pooled grid, (d, h, w) row-major."""
        cfg = self.config
        if tokens.dim() != 3 or tokens.shape[1:] != (cfg.n_tokens_in, cfg.d_embed):
            hint = " (the cls token must be dropped first)" if tokens.dim() == 3 and \
                tokens.shape[1] == cfg.n_tokens_in + 1 else ""
            raise ValueError(f"expected (batch, {cfg.n_tokens_in}, {cfg.d_embed}) patch tokens on the "
                             f"{cfg.token_grid} grid, got shape {tuple(tokens.shape)}{hint}")
        b = tokens.shape[0]
        grid = tokens.transpose(1, 2).reshape(b, cfg.d_embed, *cfg.token_grid)
        pooled = F.avg_pool3d(grid, kernel_size=cfg.pool_size, stride=cfg.pool_size)
        return pooled.flatten(2).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, d_embed) patch tokens [+ (B, n_labels) logits] → (B, prefix_len, d_llm) image tokens."""
        dtype = self.projector[0].weight.dtype
        out = self.projector(self.pooled(tokens.to(dtype)))
        if self.logit_tokens is None:
            return out
        cfg = self.config
        if logits is None or logits.shape != (tokens.shape[0], cfg.n_labels):
            got = "none" if logits is None else f"shape {tuple(logits.shape)}"
            raise ValueError(f"this connector takes ({tokens.shape[0]}, {cfg.n_labels}) classifier logits beside "
                             f"the patch tokens; got {got}")
        # Soft logits are a frozen prior: no gradient flows back into the classifier.
        extra = self.logit_tokens(logits.detach().to(dtype)).view(tokens.shape[0], cfg.logit_tokens, cfg.d_llm)
        return torch.cat((out, extra), dim=1)


__all__ = ["SpatialPoolingConnector"]
