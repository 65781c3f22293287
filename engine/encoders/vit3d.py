"""M3D's 3D ViT (the vision encoder of M3D-CLIP and the vision tower of M3D-LaMed), in plain torch.

A port of `LaMed/src/model/multimodal_encoder/vit.py` (github.com/BAAI-DCAI/M3D, commit 63e7200), which
builds MONAI 1.3's ViT blocks; MONAI >= 1.4 cannot construct it (it dropped the `pos_embed` argument
M3D passes), so the blocks are written here with the checkpoint's key names, as transformers'
modeling files do: `ViT3D.state_dict()` has exactly the 138 keys of M3D's `ViT` (`vision_encoder.*`
in an M3D-CLIP checkpoint, `model.vision_tower.vision_tower.*` in a LaMed one, bare in
`pretrained_ViT.bin`). The reference fixtures' README (shared/m3d) lists the traps this follows:

    (B, C, D, H, W)  D = slice axis; MONAI's "(h p1) (w p2) (d p3)" letters are (D, H, W) here
    → patches ordered (pD, pH, pW, c), tokens in (d, h, w) row-major order → Linear (with bias)
    → + position_embeddings (one row per patch, none for cls) → cls token prepended at index 0
    → pre-norm blocks: qkv without bias split (qkv, heads, head_dim); exact-erf GELU; LayerNorm eps 1e-5
    → final LayerNorm on every token = last_feature (cls first)

The LaMed tower feeds `last_feature[:, 1:]` (cls dropped) to its projector; M3D-CLIP's image embedding
is `normalize(mm_vision_proj(last_feature))[:, 0]`, the cls token. This file knows nothing of files:
checkpoints are read by engine/encoders/m3d_checkpoint.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import JsonConfig, read_json
from engine.errors import ConfigError, VolumeError

LAYER_NORM_EPS = 1e-5  # MONAI's nn.LayerNorm default; timm's 1e-6 moves last_feature by 5e-5


@dataclass(frozen=True)
class ViT3DConfig(JsonConfig):
    """ViT hyper-parameters. Defaults are M3D's (M3DCLIPConfig and LaMed's ViT3DTower, whose
    768/3072/12/12 are hard-coded): input (B, 1, 32, 256, 256), patches 4 x 16 x 16, 2048 tokens."""

    in_channels: int = 1
    image_size: tuple[int, int, int] = (32, 256, 256)  # (D, H, W) voxels
    patch_size: tuple[int, int, int] = (4, 16, 16)  # (pD, pH, pW)
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    # M3D-CLIP's mm_vision_proj (Linear(hidden, hidden) with bias) for the CLIP image embedding; a
    # LaMed vision tower or pretrained_ViT.bin has none.
    clip_projection: bool = True
    _json_ignore = frozenset({"name", "description"})  # the shipped config files' labels

    def __post_init__(self):
        for name in ("image_size", "patch_size"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 3 or min(value) < 1:
                raise ConfigError(f"ViT3DConfig.{name} must be three positive sizes (D, H, W), got {value}")
            object.__setattr__(self, name, value)
        for name in ("in_channels", "hidden_size", "mlp_dim", "num_layers", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"ViT3DConfig.{name} must be at least 1, got {getattr(self, name)}")
        if any(n % p for n, p in zip(self.image_size, self.patch_size)):
            raise ConfigError(f"ViT3DConfig: image_size {self.image_size} is not a multiple of patch_size "
                              f"{self.patch_size} on every axis")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"ViT3DConfig: hidden_size {self.hidden_size} is not divisible by "
                              f"{self.num_heads} heads")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along (D, H, W): (8, 16, 16) at full size."""
        return tuple(n // p for n, p in zip(self.image_size, self.patch_size))  # type: ignore[return-value]

    @property
    def n_patches(self) -> int:
        return math.prod(self.grid)

    @property
    def patch_dim(self) -> int:
        return self.in_channels * math.prod(self.patch_size)

    @classmethod
    def from_json(cls, path: str | Path) -> ViT3DConfig:
        path = Path(path)
        data = read_json(path, "encoder config")
        if not isinstance(data, dict):
            raise ConfigError("encoder config must be a JSON object", path)
        return cls.from_dict(data, source=path)


class PatchRearrange(nn.Module):
    """MONAI's `Rearrange("b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)")` with h, w, d the
    input's (D, H, W): (B, C, D, H, W) → (B, n_patches, pD·pH·pW·C). Parameter-free (index 0 of
    `patch_embeddings`, so the Linear keeps the checkpoint's index 1)."""

    def __init__(self, patch_size: tuple[int, int, int]):
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        pd, ph, pw = self.patch_size
        x = x.reshape(b, c, d // pd, pd, h // ph, ph, w // pw, pw)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (b, gd, gh, gw, pd, ph, pw, c)
        return x.reshape(b, (d // pd) * (h // ph) * (w // pw), pd * ph * pw * c)


class PatchEmbedding(nn.Module):
    """MONAI's PatchEmbeddingBlock (proj_type "perceptron", learnable positions, dropout 0)."""

    def __init__(self, cfg: ViT3DConfig):
        super().__init__()
        self.patch_embeddings = nn.Sequential(PatchRearrange(cfg.patch_size), nn.Linear(cfg.patch_dim, cfg.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, cfg.n_patches, cfg.hidden_size))
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embeddings(x) + self.position_embeddings


class SelfAttention(nn.Module):
    """MONAI's SABlock: qkv without bias, laid out (qkv, heads, head_dim); softmax(q·kᵀ/√d_head)·v."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # the same scale, no mask
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MLPBlock(nn.Module):
    def __init__(self, hidden: int, mlp_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(hidden, mlp_dim)
        self.linear2 = nn.Linear(mlp_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.gelu(self.linear1(x)))  # exact erf GELU, as nn.GELU()


class TransformerBlock(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: ViT3DConfig):
        super().__init__()
        self.mlp = MLPBlock(cfg.hidden_size, cfg.mlp_dim)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT3D(nn.Module):
    """M3D's `ViT` (classification head unused): forward → (last_feature, per-block hidden states)."""

    def __init__(self, cfg: ViT3DConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = PatchEmbedding(cfg)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C, D, H, W) → (last_feature (B, 1 + n_patches, hidden), cls first; the output of each
        block, before the final norm)."""
        x = self.patch_embedding(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # cls gets no position
        hidden_states = []
        for block in self.blocks:
            x = block(x)
            hidden_states.append(x)
        return self.norm(x), hidden_states


class ViT3DEncoder(nn.Module):
    """The vision side of M3D-CLIP (`vision_encoder`, `mm_vision_proj`), frozen (eval mode, no
    gradients). `forward` gives the CLIP image embedding; `patch_features` the LaMed tower's output."""

    def __init__(self, cfg: ViT3DConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_encoder = ViT3D(cfg)
        self.mm_vision_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.clip_projection else None
        self.requires_grad_(False)
        self.eval()

    def check_input(self, x: torch.Tensor) -> None:
        cfg = self.cfg
        want = f"(B, {cfg.in_channels}, {', '.join(map(str, cfg.image_size))})"
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise VolumeError(f"vit3d input must be a floating-point tensor {want}, got {got}")
        if x.shape[0] == 0 or x.shape[1] != cfg.in_channels or tuple(x.shape[2:]) != cfg.image_size:
            raise VolumeError(f"vit3d input must be {want} (preprocess the volume to the encoder's grid first), "
                              f"got {tuple(x.shape)}")
        if x.device.type != "meta" and not torch.isfinite(x).all():
            raise VolumeError("vit3d input contains NaN or infinite values")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """ViT3D's (last_feature, hidden states) after the input checks, in the model's dtype."""
        self.check_input(x)
        return self.vision_encoder(x.to(self.vision_encoder.cls_token.dtype))

    @staticmethod
    def tower_features(last_feature: torch.Tensor) -> torch.Tensor:
        """LaMed's ViT3DTower (select_layer -1, select_feature "patch"): the final-normed tokens
        without cls, (B, n_patches, hidden): the spatial-pooling connector's input."""
        return last_feature[:, 1:]

    def clip_embedding(self, last_feature: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """M3D-CLIP's image embedding: mm_vision_proj on the cls token, L2-normalised (B, hidden)."""
        if self.mm_vision_proj is None:
            raise ConfigError("this vit3d encoder has no mm_vision_proj (clip_projection false: a LaMed vision "
                              "tower), so it has no CLIP image embedding; use its patch features")
        cls = self.mm_vision_proj(last_feature[:, 0])
        return F.normalize(cls, dim=-1) if normalize else cls

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) → (B, n_patches, hidden): what LaMed's projector receives."""
        return self.tower_features(self.encode(x)[0])

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, C, D, H, W) → the M3D-CLIP image embedding (B, hidden), unit length by default."""
        return self.clip_embedding(self.encode(x)[0], normalize)


class ViT3DPatchEncoder(ViT3DEncoder):
    """The same ViT whose output is LaMed's tower features flattened, (B, n_patches * hidden): what
    the embedding cache keeps per volume for the spatial-pooling connector (one row a volume; the
    connector's caller reshapes it to (B, n_patches, hidden)). Its own encoder name ("vit3d-patches")
    keeps these rows and the CLIP embeddings in different caches."""

    @property
    def latent_dim(self) -> int:
        return self.cfg.n_patches * self.cfg.hidden_size

    def forward(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.patch_features(x).flatten(1)


__all__ = ["LAYER_NORM_EPS", "ViT3D", "ViT3DConfig", "ViT3DEncoder", "ViT3DPatchEncoder"]
