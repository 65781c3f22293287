"""Loading CT-CLIP's vision weights from a local checkpoint, and saving our own encoder weights.

A CT-CLIP checkpoint (e.g. CT-CLIP_v2.pt) is the `state_dict()` of the whole CTCLIP model: the
vision side we keep (`visual_transformer.*`, `to_visual_latent*`) plus a BERT text side and the
contrastive temperature, which are dropped and counted. Nothing is downloaded.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.encoders import DEFAULT_ENCODER
from engine.errors import CheckpointError
from engine.weights import assign, load_weights_strict, mismatches, read_safetensors

VISION_PREFIXES = ("visual_transformer.", "to_visual_latent.", "to_visual_latent_extra.")
# CTCLIP keys outside the vision side: dropped on purpose (counted in the report).
NON_VISION_PREFIXES = ("text_transformer.", "to_text_latent.", "to_text_latent_extra.", "temperature")
# Containers a training script may wrap the state dict in.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
# Prefixes added by DataParallel / DistributedDataParallel / torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
MAX_LISTED = 12


@dataclass
class VisionLoadReport:
    path: str
    loaded: int  # tensors copied into the model
    dropped: dict[str, int] = field(default_factory=dict)  # non-vision prefix -> count
    stripped_prefix: str | None = None  # e.g. "module."
    missing: list[str] = field(default_factory=list)  # only with strict=False
    unexpected: list[str] = field(default_factory=list)  # only with strict=False
    shape_mismatches: list[str] = field(default_factory=list)  # only with strict=False


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file: .safetensors, or a torch .pt/.pth/.bin holding a state
    dict (possibly wrapped in {"state_dict"|"model": ...}). Read with weights_only=True unless
    trust_pickle (only for files you trust: a pickle can run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = _torch_load(path, trust_pickle)
    return _unwrap(obj, path)


def _torch_load(path: Path, trust_pickle: bool):
    try:
        try:
            # mmap avoids holding a second copy of a 1+ GB checkpoint; the legacy format lacks it.
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot be read with torch.load(weights_only=True): {first_line}. If you trust this file, "
            "load it with trust_pickle=True",
            path,
        ) from None
    except Exception as err:  # a corrupt file can fail anywhere inside the unpickler
        raise CheckpointError(f"not a readable torch checkpoint ({type(err).__name__}: {err})", path) from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"holds a {type(obj).__name__}, not a state dict", path)
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:MAX_LISTED]
            raise CheckpointError(
                f"is not a state dict: entries {bad} are not tensors and there is no "
                f"{'/'.join(WRAPPER_KEYS)} entry to look in",
                path,
            )
        obj = inner
    if not obj:
        raise CheckpointError("holds an empty state dict", path)
    return dict(obj)


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return state, None


def split_vision_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, int], str | None]:
    """(vision tensors, counts of dropped non-vision prefixes, stripped wrapper prefix).
    Keys of neither kind stay in the vision dict, so a strict load reports them."""
    state, stripped = _strip_wrapper_prefix(state)
    vision: dict[str, torch.Tensor] = {}
    dropped: dict[str, int] = {}
    for key, tensor in state.items():
        other = next((p for p in NON_VISION_PREFIXES if key.startswith(p)), None)
        if other is None:
            vision[key] = tensor
        else:
            dropped[other] = dropped.get(other, 0) + 1
    return vision, dropped, stripped


def load_ctclip_vision(
    model: nn.Module, path: str | Path, strict: bool = True, *, trust_pickle: bool = False
) -> VisionLoadReport:
    """Load the vision side of a CT-CLIP checkpoint (or of our own saved encoder weights) into
    `model` (a CTCLIPImageEncoder). strict=True: any missing key, unexpected key or shape
    mismatch raises CheckpointError naming the file and listing them all (engine.weights).
    A model built on the meta device gets the checkpoint tensors assigned (cast to its dtypes)."""
    path = Path(path)
    vision, dropped, stripped = split_vision_state(read_state_dict(path, trust_pickle=trust_pickle))
    missing, unexpected, mismatched = mismatches(model, vision)
    if strict:
        load_weights_strict(model, path, "encoder", state=vision)
        usable = vision
    else:
        bad_shape = {m.split(" ", 1)[0] for m in mismatched}
        expected = model.state_dict()
        usable = {k: v for k, v in vision.items() if k in expected and k not in bad_shape}
        assign(model, usable)

    initted = usable.get("visual_transformer.vq._codebook.initted")
    if initted is not None and not bool((initted == 1).all()):
        raise CheckpointError(
            "visual_transformer.vq._codebook.initted is not 1: the VQ codebook was never initialised "
            "(CT-CLIP would run k-means inside forward), so these are not trained encoder weights",
            path,
        )
    return VisionLoadReport(
        path=str(path),
        loaded=len(usable),
        dropped=dropped,
        stripped_prefix=stripped,
        missing=missing,
        unexpected=unexpected,
        shape_mismatches=mismatched,
    )


def save_encoder_weights(model: nn.Module, path: str | Path, *, trainable_only: bool = False) -> Path:
    """Write the encoder's state dict (or only its trainable parameters) as safetensors, with the
    encoder config in the metadata. Reload with load_ctclip_vision (strict=False for
    trainable_only files)."""
    from safetensors.torch import save_file

    path = Path(path)
    if trainable_only:
        state = {k: p for k, p in model.named_parameters() if p.requires_grad}
    else:
        state = model.state_dict()
    if not state:
        raise CheckpointError("nothing to save: the encoder has no trainable parameters", path)
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in state.items()}
    metadata = {"format": "pt", "encoder": DEFAULT_ENCODER}
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        metadata["config"] = json.dumps(cfg.to_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
