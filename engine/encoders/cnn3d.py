"""A small 3-D CNN image encoder: the second encoder family behind `ENCODERS` (name `cnn3d`).

Why: CT-ViT's patch embedding LayerNorms each 45 x 45 x 60 mm patch of the demo grid, so a 10 mm
nodule or a 4 mm fibrotic band, a few voxels of one patch, barely moves its token (README, "The
embedded demo model"; `rad3d finding-visibility` shows that those findings do change tens to
hundreds of voxels of the grid by far more than the noise). Convolutions with small kernels see
such a change wherever it is, and a global max pool keeps the strongest local response instead of
averaging it away over the volume. Input: the demo's windowed channels (C, D, H, W); output: a
`dim_latent` vector (avg and max pooled features, projected), like CT-CLIP's image latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import JsonConfig
from engine.errors import ConfigError


@dataclass(frozen=True)
class CNN3DConfig(JsonConfig):
    channels: int = 6  # input channels (the demo's five windows + reference channel)
    widths: tuple[int, ...] = (8, 16, 32, 64)  # features per stage; each stage halves the grid
    first_stride: tuple[int, int, int] = (1, 2, 2)  # the demo's voxels are twice as long along D
    convs_per_stage: int = 1  # 3x3x3 convolutions per stage (the first strides); 1 keeps a CPU step ~1 s/volume
    groups: int = 4  # GroupNorm groups (batch statistics are unreliable at batch 8)
    dim_latent: int = 256

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "first_stride", tuple(int(s) for s in self.first_stride))
        if self.channels < 1 or not self.widths or any(w < 1 or w % self.groups for w in self.widths):
            raise ConfigError(f"cnn3d: channels >= 1 and widths divisible by groups={self.groups}, got "
                              f"channels={self.channels}, widths={self.widths}")
        if len(self.first_stride) != 3 or min(self.first_stride) < 1 or self.dim_latent < 1 or self.convs_per_stage < 1:
            raise ConfigError(f"cnn3d: first_stride must be three strides >= 1, dim_latent and convs_per_stage >= 1, "
                              f"got {self.first_stride}, {self.dim_latent}, {self.convs_per_stage}")


def _stage(c_in: int, c_out: int, stride, groups: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv3d(c_in if i == 0 else c_out, c_out, 3, stride=stride if i == 0 else 1, padding=1, bias=False),
                   nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class CNN3DEncoder(nn.Module):
    """(B, C, D, H, W) → (B, dim_latent)."""

    def __init__(self, cfg: CNN3DConfig = CNN3DConfig()):
        super().__init__()
        self.cfg = cfg
        stages, c_in = [], cfg.channels
        for i, w in enumerate(cfg.widths):
            stages.append(_stage(c_in, w, cfg.first_stride if i == 0 else 2, cfg.groups, cfg.convs_per_stage))
            c_in = w
        self.stages = nn.Sequential(*stages)
        self.to_latent = nn.Linear(2 * c_in, cfg.dim_latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.cfg.channels:
            raise ConfigError(f"cnn3d expects (B, {self.cfg.channels}, D, H, W), got {tuple(x.shape)}")
        f = self.stages(x).flatten(2)
        return self.to_latent(torch.cat([f.mean(-1), f.amax(-1)], dim=1))
