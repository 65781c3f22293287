"""Evidence maps: where in the volume a finding's logit comes from.

Two methods over the image model's own path (preprocess → CT-ViT encoder → classifier head):
- "gradient": gradient × input. The logit's gradient with respect to the encoder input, times the
  input, summed over the HU-window channels (the fixed reference channel carries no content),
  absolute value, smoothed over one input voxel so the peak is not a single noisy voxel.
- "rollout": attention rollout through CT-ViT's spatial transformer (within each slab) and its
  temporal transformer (along the slabs), each layer's head-averaged attention mixed half-half with
  the identity (Abnar & Zuidema 2020), started from the pooled tokens weighted by their positive
  gradient × feature for the finding (the head reads each (h, w) position of the pooled tokens).
  A map at token resolution, interpolated to the input grid.
The chosen default (DEFAULT_METHOD) is the one whose peak lands inside the planted object more
often on the phantoms (`rad3d evidence-check`; README "Evidence in the volume").

Maps are computed on the encoder's input grid and resampled to the volume's voxel grid by the
inverse of engine.preprocess's resample-and-crop, so a viewer can lay them over the case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from engine.errors import ConfigError
from engine.preprocess import crop_or_pad_window, resampled_size

METHODS = ("gradient", "rollout")
DEFAULT_METHOD = "gradient"


@dataclass
class EvidenceMap:
    """One finding's map on the encoder input grid (D=z, H=x, W=y), non-negative, peak 1 (all zero
    when nothing in the input moves the logit), and the logit it explains."""

    finding: str
    method: str
    input_map: np.ndarray
    logit: float


def finding_indices(model, findings: Sequence[str]) -> list[int]:
    names = list(model.label_set.names)
    unknown = [f for f in findings if f not in names]
    if unknown:
        raise ConfigError(f"unknown finding {unknown[0]!r} (this image model knows: {', '.join(names)})")
    return [names.index(f) for f in findings]


def _normalised(m: torch.Tensor) -> np.ndarray:
    m = m.detach().float().clamp_min(0)
    peak = float(m.max())
    return (m / peak if peak > 0 else m).numpy().astype(np.float32)


def _content_channels(model) -> int:
    """Input channels that carry the volume (the reference channel, if any, is last and fixed)."""
    cfg = model.preprocess_config
    return cfg.channels - (1 if cfg.reference_channel else 0)


def gradient_maps(model, x: torch.Tensor, findings: Sequence[str], smooth: bool = True) -> list[EvidenceMap]:
    """Gradient × input for each finding from one forward pass; x: (C, D, H, W) encoder input."""
    idx = finding_indices(model, findings)
    x = x.detach().to(model.device, torch.float32).unsqueeze(0).requires_grad_(True)
    c = _content_channels(model)
    maps = []
    with torch.enable_grad():
        logits = model.classifier(model.encoder(x))[0]
        for k, (name, i) in enumerate(zip(findings, idx)):
            (grad,) = torch.autograd.grad(logits[i], x, retain_graph=k < len(idx) - 1)
            m = (grad[0, :c] * x[0, :c]).detach().sum(0).abs().cpu()
            if smooth:
                m = F.avg_pool3d(m[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
            maps.append(EvidenceMap(name, "gradient", _normalised(m), float(logits[i].detach())))
    return maps


class _AttentionRecorder:
    """Forward hooks on each Attention module of a transformer that keep its head-averaged attention
    probabilities (recomputed from the module's own inputs and weights, as its forward computes them)."""

    def __init__(self, transformer):
        self.probs: list[torch.Tensor] = []
        self.handles = [block.attn.register_forward_hook(self._hook) for block in transformer.layers]

    def _hook(self, attn, args, output):
        x = args[0].detach()
        bias = args[1] if len(args) > 1 else None
        n_seq, n_tok, _ = x.shape
        q = attn.to_q(attn.norm(x))
        k, _ = attn.to_kv(x).chunk(2, dim=-1)
        q, k = (t.reshape(n_seq, n_tok, attn.heads, -1).transpose(1, 2) for t in (q, k))
        q = F.normalize(q, dim=-1) * attn.q_scale
        k = F.normalize(k, dim=-1) * attn.k_scale
        scores = (q @ k.transpose(-1, -2)) * attn.scale
        if bias is not None:
            scores = scores + bias
        self.probs.append(scores.softmax(-1).mean(1).detach())

    def rollout(self) -> torch.Tensor:
        """(n_seq, n_tok, n_tok): output token ← input token, through all layers."""
        out = None
        for a in self.probs:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1])
            a = a / a.sum(-1, keepdim=True)
            out = a if out is None else a @ out
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _pooled_weights(model, x: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per finding, the positive gradient × feature of each pooled (h, w) token: (F, h*w); and the logits."""
    encoder = model.encoder
    seen = {}

    def grab(module, args):
        seen["pooled"] = args[0].detach().requires_grad_(True)
        return (seen["pooled"],)

    handle = encoder.to_visual_latent.register_forward_pre_hook(grab)
    try:
        with torch.enable_grad():
            logits = model.classifier(encoder(x))[0]
            d = encoder.cfg.dim
            rows = []
            for k, i in enumerate(idx):
                (g,) = torch.autograd.grad(logits[i], seen["pooled"], retain_graph=k < len(idx) - 1)
                w = (g * seen["pooled"]).reshape(-1, d).sum(-1)
                rows.append(w.clamp_min(0) if (w > 0).any() else w.abs())
    finally:
        handle.remove()
    return torch.stack(rows).detach(), logits.detach()


def rollout_maps(model, x: torch.Tensor, findings: Sequence[str]) -> list[EvidenceMap]:
    """Gradient-weighted attention rollout for each finding; x: (C, D, H, W) encoder input."""
    idx = finding_indices(model, findings)
    vt = model.encoder.visual_transformer
    spatial, temporal = _AttentionRecorder(vt.enc_spatial_transformer), _AttentionRecorder(vt.enc_temporal_transformer)
    x = x.detach().to(model.device, torch.float32).unsqueeze(0)
    try:
        weights, logits = _pooled_weights(model, x, idx)
        r_sp, r_tm = spatial.rollout().cpu(), temporal.rollout().cpu()  # (t, hw, hw), (hw, t, t)
    finally:
        spatial.close()
        temporal.close()
    t, hw = r_sp.shape[0], r_sp.shape[1]
    cfg = model.encoder.cfg
    h = w = cfg.image_size // cfg.patch_size
    maps = []
    for name, i, wt in zip(findings, idx, weights.cpu()):
        out = (wt / t)[:, None].expand(hw, t)  # every slab's output token feeds the mean over t
        into_temporal = torch.einsum("qs,qst->tq", out, r_tm)  # (t, hw) relevance of temporal inputs
        tokens = torch.einsum("tq,tqr->tr", into_temporal, r_sp).reshape(1, 1, t, h, w)
        m = F.interpolate(tokens, size=tuple(x.shape[-3:]), mode="trilinear", align_corners=False)[0, 0]
        maps.append(EvidenceMap(name, "rollout", _normalised(m), float(logits[i])))
    return maps


def evidence_maps(model, x: torch.Tensor, findings: Sequence[str], method: str = DEFAULT_METHOD) -> list[EvidenceMap]:
    """One map per finding by `method` (METHODS) for encoder input x (C, D, H, W)."""
    if method == "gradient":
        return gradient_maps(model, x, findings)
    if method == "rollout":
        return rollout_maps(model, x, findings)
    raise ConfigError(f"unknown evidence method {method!r} (use one of {', '.join(METHODS)})")


def _input_coordinates(n: int, spacing: float, target_spacing: float, target: int) -> np.ndarray:
    """For each of a volume axis's n voxel centres, its (fractional) index on the encoder input axis:
    the inverse of preprocess's linear resample (align_corners=False) and centre crop / pad."""
    m = resampled_size(n, spacing, target_spacing)
    start, _, before, _ = crop_or_pad_window(m, target)
    resampled = (np.arange(n, dtype=np.float64) + 0.5) * m / n - 0.5
    return resampled - start + before


def to_volume_grid(input_map: np.ndarray, volume_shape: Sequence[int], spacing_mm: Sequence[float],
                   config) -> np.ndarray:
    """An input-grid map (D=z, H=x, W=y) → float32 (X, Y, Z) on the volume's voxel grid (trilinear;
    voxels the crop left out of the input read 0)."""
    coords = [_input_coordinates(n, s, t, k) for n, s, t, k in
              zip(volume_shape, spacing_mm, config.spacing_mm, config.shape_xyz)]
    cx, cy, cz = coords
    grid = np.stack(np.meshgrid(cz, cx, cy, indexing="ij"), 0)  # (3, Z, X, Y) in (D, H, W) order
    out = ndimage.map_coordinates(input_map.astype(np.float32), grid.reshape(3, -1), order=1, mode="constant", cval=0.0)
    return np.ascontiguousarray(out.reshape(len(cz), len(cx), len(cy)).transpose(1, 2, 0))


def peak_voxel(volume_map: np.ndarray) -> tuple[int, int, int]:
    """The voxel (x, y, z) of maximum evidence."""
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(volume_map)), volume_map.shape))
