"""Reading M3D's checkpoints (github.com/BAAI-DCAI/M3D): the vision side into a `ViT3DEncoder`, the
spatial-pooling projector into a `SpatialPoolingConnector`. Local files only; nothing is downloaded.

The kind of checkpoint is told by its key prefixes (shared/m3d/README.md, "Keys and prefixes"):
    M3D-CLIP (model.safetensors, model_params.bin)  vision_encoder.<k>, mm_vision_proj.*
                                                   (+ language_encoder.*, mm_language_proj.*, logit_scale: dropped)
    M3D-LaMed (merged / HF format)                  model.vision_tower.vision_tower.<k>, model.mm_projector.projector.*
                                                   (+ the LLM, seg_module, seg_projector: dropped)
    pretrained_ViT.bin                              <k> (the ViT's own keys)
    mm_projector.bin / our fixture                  model.mm_projector.projector.* / mm_projector.projector.*
Every load goes through engine.weights.load_weights_strict: a key missing, unexpected or of another
shape is one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.encoders.checkpoint import read_state_dict
from engine.errors import CheckpointError
from engine.weights import load_weights_strict

CLIP_VISION = "vision_encoder."
CLIP_PROJECTION = "mm_vision_proj."
LAMED_TOWER = "model.vision_tower.vision_tower."
PROJECTOR_PREFIXES = ("model.mm_projector.", "mm_projector.")  # LaMed's, and M3D's own mm_projector.bin cut
# Containers and wrappers: DataParallel / torch.compile, and peft's prefix in model_with_lora.bin.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "base_model.model.")
VIT_MARKERS = ("cls_token", "patch_embedding.position_embeddings")  # a bare pretrained_ViT.bin
CTCLIP_MARKERS = ("visual_transformer.", "to_visual_latent.")


@dataclass
class M3DLoadReport:
    path: str
    kind: str  # "M3D-CLIP", "M3D-LaMed" or "M3D ViT (pretrained_ViT.bin)"
    loaded: int
    dropped: dict[str, int] = field(default_factory=dict)  # other top-level prefix -> count


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _prefix_counts(keys) -> dict[str, int]:
    """Counts by the first one or two name parts ("language_encoder.", "model.layers.", "logit_scale")."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:2 if parts[0] == "model" and len(parts) > 2 else 1])
        head += "." if head != key else ""
        counts[head] = counts.get(head, 0) + 1
    return counts


def _not_m3d(state: dict[str, torch.Tensor], path: Path) -> CheckpointError:
    found = ", ".join(f"{p} ({n})" for p, n in sorted(_prefix_counts(state).items())[:8])
    if any(k.startswith(CTCLIP_MARKERS) for k in state):
        return CheckpointError(f"is a CT-CLIP checkpoint (visual_transformer.*), not an M3D one: load it with the "
                               f"ctvit encoder (found {found})", path)
    if any(k.startswith("model.") for k in state):
        return CheckpointError(f"is an M3D-LaMed file without a vision tower ({LAMED_TOWER}*): e.g. mm_projector.bin "
                               f"or the LLM alone; the vit3d encoder needs the full model or M3D-CLIP's file "
                               f"(found {found})", path)
    return CheckpointError(f"is not an M3D vision checkpoint: no {CLIP_VISION}*, {LAMED_TOWER}* or bare ViT keys "
                           f"(cls_token, patch_embedding.*) (found {found})", path)


def split_m3d_vision(state: dict[str, torch.Tensor], path: Path) -> tuple[str, dict[str, torch.Tensor], dict[str, int]]:
    """(kind, the vision tensors under ViT3DEncoder's names, counts of the dropped prefixes)."""
    state = _strip_wrappers(state)
    if any(k.startswith(CLIP_VISION) for k in state):
        kind, keep = "M3D-CLIP", lambda k: k.startswith((CLIP_VISION, CLIP_PROJECTION))
        rename = dict.fromkeys(state)  # names already ViT3DEncoder's
    elif any(k.startswith(LAMED_TOWER) for k in state):
        kind, keep = "M3D-LaMed", lambda k: k.startswith(LAMED_TOWER)
        rename = {k: CLIP_VISION + k[len(LAMED_TOWER):] for k in state if k.startswith(LAMED_TOWER)}
    elif all(m in state for m in VIT_MARKERS):
        kind, keep = "M3D ViT (pretrained_ViT.bin)", lambda k: True  # every key is the ViT's: strict says so
        rename = {k: CLIP_VISION + k for k in state}
    else:
        raise _not_m3d(state, path)
    vision = {rename.get(k) or k: v for k, v in state.items() if keep(k)}
    dropped = _prefix_counts(k for k in state if not keep(k))
    return kind, vision, dropped


def load_m3d_vision(model: nn.Module, path: str | Path, *, trust_pickle: bool = False) -> M3DLoadReport:
    """Load the vision side of an M3D checkpoint (safetensors or torch .bin/.pt) into `model`, a
    ViT3DEncoder, strictly. A LaMed tower or pretrained_ViT.bin has no mm_vision_proj: the encoder
    must be built with clip_projection false for it."""
    path = Path(path)
    kind, vision, dropped = split_m3d_vision(read_state_dict(path, trust_pickle=trust_pickle), path)
    has_projection = getattr(model, "mm_vision_proj", None) is not None
    if has_projection and not any(k.startswith(CLIP_PROJECTION) for k in vision):
        raise CheckpointError(f"is an {kind} checkpoint: it holds the ViT but no mm_vision_proj (M3D-CLIP's image "
                              "projection); build the vit3d encoder with clip_projection false to load it", path)
    if not has_projection:  # M3D-CLIP's ViT as a LaMed tower (how LaMed's pretrained_ViT.bin was made)
        projection = [k for k in vision if k.startswith(CLIP_PROJECTION)]
        for key in projection:
            del vision[key]
        if projection:
            dropped[CLIP_PROJECTION] = len(projection)
    load_weights_strict(model, path, f"{kind} vision", state=vision)
    return M3DLoadReport(str(path), kind, len(vision), dropped)


def split_m3d_projector(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The projector's tensors as `projector.{0,2}.*` (SpatialPoolingConnector's names)."""
    state = _strip_wrappers(state)
    for prefix in PROJECTOR_PREFIXES:
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix + "projector.")}
        if found:
            return found
    if state and all(k.startswith("projector.") for k in state):
        return state
    listed = ", ".join(f"{p} ({n})" for p, n in sorted(_prefix_counts(state).items())[:8])
    raise CheckpointError(f"holds no M3D spatial-pooling projector (model.mm_projector.projector.* or "
                          f"mm_projector.projector.*) (found {listed})", path)


def load_m3d_projector(connector: nn.Module, path: str | Path, *, trust_pickle: bool = False,
                       partial: bool = False) -> int:
    """Load M3D's projector (LaMed's full model, mm_projector.bin, or a file of `mm_projector.*`)
    into a SpatialPoolingConnector, strictly; `partial` lets keys M3D has no counterpart for (the
    logit tokens) keep their values. Returns the number of tensors loaded."""
    path = Path(path)
    state = split_m3d_projector(read_state_dict(path, trust_pickle=trust_pickle), path)
    load_weights_strict(connector, path, "M3D spatial-pooling projector", state=state, partial=partial)
    return len(state)


__all__ = ["M3DLoadReport", "load_m3d_projector", "load_m3d_vision", "split_m3d_projector", "split_m3d_vision"]
