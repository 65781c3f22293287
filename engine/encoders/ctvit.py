"""CT-ViT image encoder, compatible with CT-CLIP's released vision weights.

A port of the vision side of CT-CLIP (github.com/ibrahimethemhamamci/CT-CLIP, commit a2a155c):
the CTViT encoder (factorised spatial/temporal transformer + cosine-sim VQ codebook) and CTCLIP's
projection to the 512-d image latent. Module names follow the checkpoint, so
`CTCLIPImageEncoder.state_dict()` has exactly the checkpoint's `visual_transformer.*`,
`to_visual_latent.*` and `to_visual_latent_extra.*` keys. Positional children ("0", "1", "3")
are CT-CLIP's nn.ModuleList / nn.Sequential indices; properties give them readable names.

The latent path (README of the reference fixtures, steps 1-7):
    (B, 1, D, H, W) -> patches (B, t, h, w, dim) -> spatial transformer over (h w) per slab
    -> temporal transformer over t per (h, w) -> VQ lookup -> mean over t -> flatten (h, w, dim)
    -> to_visual_latent -> L2 normalise.
The slice axis D plays the role of CT-CLIP's video "time" axis.

Modules that exist only so a CT-CLIP checkpoint loads strictly are marked UNUSED below.
This file knows nothing of files: checkpoint reading lives in engine/encoders/checkpoint.py.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import JsonConfig, read_json
from engine.errors import ConfigError, VolumeError

Trainable = Literal["none", "last_layer"]


@dataclass(frozen=True)
class CTViTConfig(JsonConfig):
    """CTViT + CTCLIP-projection hyper-parameters. Defaults are CT-CLIP's public model."""

    dim: int = 512
    codebook_size: int = 8192
    image_size: int = 480  # H == W of the input (voxels); CT-CLIP: 480 at 0.75 mm
    patch_size: int = 20
    temporal_patch_size: int = 10  # patch depth along D (slices); CT-CLIP: 240 slices at 1.5 mm
    spatial_depth: int = 4
    temporal_depth: int = 4
    dim_head: int = 32
    heads: int = 8
    channels: int = 1
    dim_latent: int = 512
    ff_mult: int = 4
    attn_scale: float = 8.0  # fixed logit scale applied to cosine-normalised q.k
    position_bias_layers: int = 2  # hidden layers of the continuous position bias MLP
    # D the weights were trained for; None accepts any multiple of temporal_patch_size.
    num_slices: int | None = 240
    _json_ignore = frozenset({"name", "description"})  # the shipped config files' labels

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "num_slices" and value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"CTViTConfig.{f.name} must be a positive number, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"CTViTConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.num_slices is not None and self.num_slices % self.temporal_patch_size:
            raise ConfigError(
                f"CTViTConfig: num_slices {self.num_slices} is not a multiple of "
                f"temporal_patch_size {self.temporal_patch_size}"
            )

    @property
    def grid_size(self) -> int:
        """Tokens along H (and W)."""
        return self.image_size // self.patch_size

    @property
    def patch_dim(self) -> int:
        return self.channels * self.temporal_patch_size * self.patch_size**2

    @property
    def dim_image(self) -> int:
        """Width of the pooled feature CTCLIP projects: h * w * dim (294912 for the public model)."""
        return self.grid_size**2 * self.dim

    @property
    def ff_inner_dim(self) -> int:
        return int(self.ff_mult * (2 / 3) * self.dim)  # 1365 for dim 512, as CT-CLIP computes it

    @classmethod
    def from_json(cls, path: str | Path) -> CTViTConfig:
        path = Path(path)
        data = read_json(path, "encoder config")
        if not isinstance(data, dict):
            raise ConfigError("encoder config must be a JSON object", path)
        return cls.from_dict(data, source=path)


# ---------------------------------------------------------------------------------------------
# building blocks


class BiasFreeLayerNorm(nn.Module):
    """LayerNorm with a learned gain and a fixed zero bias. CT-CLIP stores the bias as a
    *buffer* named `beta`, so it is one here too (it is in the checkpoint and must load)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta)


class Patchify(nn.Module):
    """(B, C, D, H, W) -> (B, t, h, w, C*pt*p*p), patch vector ordered (c, pt, p1, p2).
    No parameters; it holds index 0 of CT-CLIP's `to_patch_emb` Sequential."""

    def __init__(self, patch_size: int, temporal_patch_size: int):
        super().__init__()
        self.p = patch_size
        self.pt = temporal_patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, hh, ww = x.shape
        p, pt = self.p, self.pt
        x = x.reshape(b, c, d // pt, pt, hh // p, p, ww // p, p)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # b t h w c pt p1 p2
        return x.reshape(b, d // pt, hh // p, ww // p, c * pt * p * p)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, inner_dim: int) -> nn.Sequential:
    # Indices match the checkpoint: 0 LayerNorm, 1 up-projection, 2 GEGLU, 3 dropout slot
    # (p=0 in CT-CLIP, so Identity), 4 down-projection.
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner_dim * 2, bias=False),
        GEGLU(),
        nn.Identity(),
        nn.Linear(inner_dim, dim, bias=False),
    )


class PEG(nn.Module):
    """Position-generating depthwise 3-D conv over the (t, h, w) token grid, causal along t
    (t is padded 2 before, 0 after; h and w 1 on each side)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor, grid_shape: tuple[int, int, int, int]) -> torch.Tensor:
        """x: (N, n, d) tokens with grid_shape = (b, t, h, w), or a (b, t, h, w, d) grid.

        For 3-D input the tokens are viewed as (b, t, h, w, d) by a plain reshape, as CT-CLIP
        does. That is correct for the spatial transformer ((b t) (h w) layout) but NOT for the
        temporal one ((b h w) t layout): there CT-CLIP convolves a scrambled grid, and its
        weights were trained that way, so the reshape is kept on purpose."""
        orig_shape = x.shape
        if x.ndim == 3:
            x = x.reshape(*grid_shape, x.shape[-1])
        x = x.permute(0, 4, 1, 2, 3)  # b d t h w
        x = F.pad(x, (1, 1, 1, 1, 2, 0))
        x = self.dsconv(x)
        return x.permute(0, 2, 3, 4, 1).reshape(orig_shape)


class Attention(nn.Module):
    """Cosine-similarity self-attention (q, k L2-normalised, learned per-dim scales, fixed
    logit scale 8), with an optional additive bias."""

    def __init__(self, dim: int, dim_head: int, heads: int, scale: float):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.scale = scale
        self.norm = BiasFreeLayerNorm(dim)
        # UNUSED: cross-attention context norm; CT-CLIP never passes a context.
        self.context_norm = BiasFreeLayerNorm(dim)
        # UNUSED: zero null key/values (num_null_kv = 0): a (heads, 0, dim_head) tensor that
        # adds nothing but is a checkpoint key.
        self.null_kv = nn.Parameter(torch.empty(heads, 0, dim_head))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        n_seq, n_tok, _ = x.shape
        # CT-CLIP normalises only the query input: keys and values come from the raw x.
        q = self.to_q(self.norm(x))
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (t.reshape(n_seq, n_tok, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(n_seq, n_tok, -1))


class TransformerBlock(nn.Module):
    """PEG, self-attention and feed-forward, each residual. Children carry CT-CLIP's positional
    names: "0" PEG, "1" attention, "3" feed-forward ("2" is CT-CLIP's empty cross-attention slot)."""

    def __init__(self, cfg: CTViTConfig):
        super().__init__()
        self.add_module("0", PEG(cfg.dim))
        self.add_module("1", Attention(cfg.dim, cfg.dim_head, cfg.heads, cfg.attn_scale))
        self.add_module("3", feed_forward(cfg.dim, cfg.ff_inner_dim))

    @property
    def peg(self) -> PEG:
        return self._modules["0"]

    @property
    def attn(self) -> Attention:
        return self._modules["1"]

    @property
    def ff(self) -> nn.Sequential:
        return self._modules["3"]

    def forward(self, x, grid_shape, attn_bias=None):
        x = self.peg(x, grid_shape) + x
        x = self.attn(x, attn_bias) + x
        return self.ff(x) + x


class Transformer(nn.Module):
    def __init__(self, cfg: CTViTConfig, depth: int):
        super().__init__()
        self.layers = nn.ModuleList([TransformerBlock(cfg) for _ in range(depth)])
        self.norm_out = BiasFreeLayerNorm(cfg.dim)

    def forward(self, x, grid_shape, attn_bias=None):
        for block in self.layers:
            x = block(x, grid_shape, attn_bias)
        return self.norm_out(x)


class ContinuousPositionBias(nn.Module):
    """Per-head attention bias from an MLP on signed log relative (h, w) offsets (Swin v2)."""

    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        # Indices match the checkpoint: net.0.0, net.1.0 ... hidden Linear(+LeakyReLU 0.1), then
        # the head projection. Its bias adds a per-head constant: no effect after softmax.
        hidden = [nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(0.1))]
        hidden += [nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)) for _ in range(layers - 1)]
        self.net = nn.ModuleList([*hidden, nn.Linear(dim, heads)])

    def forward(self, h: int, w: int) -> torch.Tensor:
        """(heads, h*w, h*w) bias. The MLP runs once per distinct offset ((2h-1)(2w-1) of them,
        not (hw)^2) and is gathered: the same values as CT-CLIP at a fraction of the memory."""
        device = self.net[-1].weight.device
        dh = torch.arange(-(h - 1), h, device=device)
        dw = torch.arange(-(w - 1), w, device=device)
        offsets = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1).float()
        rel = torch.sign(offsets) * torch.log(offsets.abs() + 1)
        for layer in self.net:
            rel = layer(rel)
        table = rel.reshape((2 * h - 1) * (2 * w - 1), -1)  # (offsets, heads)
        ii, jj = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        index = (ii[:, None] - ii[None, :] + h - 1) * (2 * w - 1) + (jj[:, None] - jj[None, :] + w - 1)
        return table[index].permute(2, 0, 1)


class Codebook(nn.Module):
    """Buffers of vector-quantize-pytorch 1.1.2's CosineSimCodebook (one codebook). Frozen
    lookup only: no EMA, no k-means, no dead-code expiry, in any mode."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        # 1 = initialised; 0 would have made CT-CLIP run k-means inside forward (checked on load).
        self.register_buffer("initted", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(1, codebook_size))  # UNUSED EMA statistic
        self.register_buffer("embed", F.normalize(torch.randn(1, codebook_size, dim), dim=-1))


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self._codebook = Codebook(codebook_size, dim)

    @property
    def embed(self) -> torch.Tensor:
        return self._codebook.embed[0]

    def cosine_similarity(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., codebook_size) cosine similarity to every codebook row."""
        return F.normalize(x, dim=-1) @ F.normalize(self.embed, dim=-1).t()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (quantized, indices). quantized is the RAW stored row (not re-normalised),
        as CT-CLIP's VQ returns it."""
        indices = self.cosine_similarity(x).argmax(dim=-1)
        quantized = F.embedding(indices, self.embed)
        if torch.is_grad_enabled() and x.requires_grad:
            # Straight-through estimator, as CT-CLIP trained: same values (to rounding), gradient to x.
            quantized = x + (quantized - x).detach()
        return quantized, indices


# ---------------------------------------------------------------------------------------------
# models


class CTViT(nn.Module):
    """CT-CLIP's `visual_transformer`: the CTViT VQ autoencoder, of which only the encoder and
    codebook run here."""

    def __init__(self, cfg: CTViTConfig):
        super().__init__()
        self.cfg = cfg
        p, pt, c = cfg.patch_size, cfg.temporal_patch_size, cfg.channels
        self.spatial_rel_pos_bias = ContinuousPositionBias(cfg.dim, cfg.heads, cfg.position_bias_layers)
        # UNUSED: CTViT's first-frame patch embedding (disabled in CT-CLIP's forward).
        self.to_patch_emb_first_frame = nn.Sequential(
            Patchify(p, 1), nn.LayerNorm(c * p * p), nn.Linear(c * p * p, cfg.dim), nn.LayerNorm(cfg.dim)
        )
        self.to_patch_emb = nn.Sequential(
            Patchify(p, pt), nn.LayerNorm(cfg.patch_dim), nn.Linear(cfg.patch_dim, cfg.dim), nn.LayerNorm(cfg.dim)
        )
        self.enc_spatial_transformer = Transformer(cfg, cfg.spatial_depth)
        self.enc_temporal_transformer = Transformer(cfg, cfg.temporal_depth)
        self.vq = VectorQuantizer(cfg.codebook_size, cfg.dim)
        # UNUSED: decoder heads (reconstruction); index 1 would be a parameter-free Rearrange.
        self.to_pixels_first_frame = nn.Sequential(nn.Linear(cfg.dim, c * p * p))
        self.to_pixels = nn.Sequential(nn.Linear(cfg.dim, cfg.patch_dim))

    def embed_patches(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, t, h, w, dim)."""
        return self.to_patch_emb(video)

    def encode_spatial(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention within each slab of temporal_patch_size slices, over its h*w tokens."""
        b, t, h, w, d = tokens.shape
        bias = self.spatial_rel_pos_bias(h, w)
        x = self.enc_spatial_transformer(tokens.reshape(b * t, h * w, d), (b, t, h, w), bias)
        return x.reshape(b, t, h, w, d)

    def encode_temporal(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention along t for each (h, w) position; no position bias, not causal."""
        b, t, h, w, d = tokens.shape
        x = tokens.permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
        x = self.enc_temporal_transformer(x, (b, t, h, w))  # PEG sees CT-CLIP's scrambled grid
        return x.reshape(b, h, w, t, d).permute(0, 3, 1, 2, 4)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation tokens (B, t, h, w, dim)."""
        return self.encode_temporal(self.encode_spatial(self.embed_patches(video)))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Quantised tokens (B, t, h, w, dim): CTViT(video, return_encoded_tokens=True)."""
        quantized, _ = self.vq(self.encode(video))
        return quantized


class CTCLIPImageEncoder(nn.Module):
    """CT volume (B, 1, D, H, W) in CT-CLIP's preprocessing -> 512-d CT-CLIP image latent.

    Frozen by default (no gradients, eval mode). `trainable="last_layer"` unfreezes only the
    last temporal transformer block (the parameters its forward uses) and the temporal
    `norm_out` gain; gradients reach it through the VQ by straight-through."""

    def __init__(self, cfg: CTViTConfig, trainable: Trainable = "none"):
        super().__init__()
        self.cfg = cfg
        self.visual_transformer = CTViT(cfg)
        self.to_visual_latent = nn.Linear(cfg.dim_image, cfg.dim_latent, bias=False)
        # UNUSED: CTCLIP always creates this copy; the public model (extra_latent_projection=False)
        # never applies it.
        self.to_visual_latent_extra = nn.Linear(cfg.dim_image, cfg.dim_latent, bias=False)
        self.set_trainable(trainable)

    def set_trainable(self, trainable: Trainable) -> None:
        if trainable not in ("none", "last_layer"):
            raise ConfigError(f"trainable must be 'none' or 'last_layer', got {trainable!r}")
        self.trainable = trainable
        self.requires_grad_(False)
        if trainable == "last_layer":
            temporal = self.visual_transformer.enc_temporal_transformer
            temporal.layers[-1].requires_grad_(True)
            temporal.norm_out.requires_grad_(True)
            # Parameters the forward never uses stay frozen: the empty null_kv, the context norm.
            temporal.layers[-1].attn.null_kv.requires_grad_(False)
            temporal.layers[-1].attn.context_norm.requires_grad_(False)
        self.eval()

    def check_input(self, video: torch.Tensor) -> None:
        cfg = self.cfg
        want = f"(B, {cfg.channels}, D, {cfg.image_size}, {cfg.image_size})"
        if not isinstance(video, torch.Tensor):
            raise VolumeError(f"encoder input must be a torch.Tensor {want}, got {type(video).__name__}")
        if video.ndim != 5:
            raise VolumeError(f"encoder input must have 5 axes {want}, got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise VolumeError(f"encoder input must be floating point, got {video.dtype}")
        b, c, d, hh, ww = video.shape
        if b == 0 or c != cfg.channels:
            raise VolumeError(f"encoder input must be {want}, got shape {tuple(video.shape)}")
        if (hh, ww) != (cfg.image_size, cfg.image_size):
            raise VolumeError(
                f"encoder input H x W must be {cfg.image_size} x {cfg.image_size} (got {hh} x {ww}); "
                "preprocess the volume to the encoder's grid first, the encoder never crops"
            )
        if d == 0 or d % cfg.temporal_patch_size:
            raise VolumeError(
                f"encoder input depth D={d} is not a positive multiple of temporal_patch_size "
                f"{cfg.temporal_patch_size}"
            )
        if cfg.num_slices is not None and d != cfg.num_slices:
            raise VolumeError(f"encoder input depth D={d}, but this encoder expects {cfg.num_slices} slices")
        if video.device.type != "meta" and not torch.isfinite(video).all():
            raise VolumeError("encoder input contains NaN or infinite values")

    def encode_tokens(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantised tokens (B, t, h, w, dim), codebook indices (B, t, h, w))."""
        self.check_input(video)
        vt = self.visual_transformer
        video = video.to(vt.to_patch_emb[2].weight.dtype)  # e.g. a float64 volume into a float32 model
        return vt.vq(vt.encode(video))

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """CTCLIP's pooling: mean over t (the slice axis), flattened in (h, w, dim) order."""
        return tokens.mean(dim=1).reshape(tokens.shape[0], -1)

    def pooled(self, video: torch.Tensor) -> torch.Tensor:
        """(B, dim_image) pooled features, the input of to_visual_latent."""
        return self.pool(self.encode_tokens(video)[0])

    def forward(self, video: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, dim_latent) image latent; L2-normalised by default, which is what CT-CLIP returns
        with return_latents=True and saves as the image latent."""
        latent = self.to_visual_latent(self.pooled(video))
        return F.normalize(latent, dim=-1) if normalize else latent


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CTViTConfig",
    "CTViT",
    "CTCLIPImageEncoder",
    "PEG",
    "count_parameters",
]
