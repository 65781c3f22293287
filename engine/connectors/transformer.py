"""TransformerConnector: the anomaly-aware prefix projection network of RAD3D-Prefix.

Shape follows ClipCap's TransformerMapper (Mokady et al. 2021), and module names match its
checkpoints (`linear`, `prefix_const`, `transformer.layers.N.{norm1,attn,norm2,mlp}`):

    x = [latent ; logits]                         (B, d_embed + n_labels)   logits only for V-3
    clip = linear(x).view(B, clip_len, d_llm)     a short sequence made from the input
    seq = [clip ; prefix_const]                   (B, clip_len + prefix_len, d_llm)
    seq = L × pre-norm self-attention blocks      8 heads, MLP ratio 2, ReLU
    prefix = seq[:, clip_len:]                    the learnable constant's positions

Parameter count with d_llm = d (LLaMA-3.2-1B: 2048), per block: queries d² and keys/values 2d² without
bias, output projection d² + d, two LayerNorms 4d, MLP 2·d·2d + 3d  →  8d² + 8d. With L = 8,
clip_len = prefix_len = 10 and a 512-d latent: 8·(8d² + 8d) + (512·10d + 10d) + 10d = 279,093,248
(the paper's V-2, 279.09M); the 18 logits add 18·10·d = 368,640 to `linear` → 279,461,888 (V-3,
279.46M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.connectors.inputs import Connector, connector_input
from engine.model_configs import ConnectorConfig


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.dropout = dropout
        # ClipCap: queries and keys/values without bias, output projection with bias.
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.n_heads
        q = self.to_queries(x).view(b, n, h, d // h).transpose(1, 2)
        # ClipCap's layout: the 2·d output is (2, heads, head_dim), keys first.
        kv = self.to_keys_values(x).view(b, n, 2, h, d // h)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.project(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU() if act == "relu" else nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class TransformerLayer(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, act: str, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, n_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), act, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_layers: int, mlp_ratio: float, act: str, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, n_heads, mlp_ratio, act, dropout) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerConnector(Connector):
    def __init__(self, config: ConnectorConfig):
        super().__init__(config)
        self.linear = nn.Linear(config.d_in, config.clip_len * config.d_llm)
        self.prefix_const = nn.Parameter(torch.randn(config.prefix_len, config.d_llm))
        self.transformer = Transformer(
            config.d_llm, config.n_heads, config.n_layers, config.mlp_ratio, config.act, config.dropout
        )

    def forward(self, embedding: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d_embed) latent [+ (B, n_labels) logits] → (B, prefix_len, d_llm) prefix."""
        x = connector_input(self.config, embedding, logits, self.linear.weight.dtype)
        clip = self.linear(x).view(x.shape[0], self.config.clip_len, self.config.d_llm)
        const = self.prefix_const.unsqueeze(0).expand(x.shape[0], -1, -1)
        out = self.transformer(torch.cat((clip, const), dim=1))
        return out[:, self.config.clip_len :]
