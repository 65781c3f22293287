"""Image encoders, chosen by name: `ENCODERS.build(DEFAULT_ENCODER, config)`.

Named configs live in engine/configs/encoders/*.json (`ctclip-full`, `ctclip-small-fixture`) for
`ctvit`, and in engine/configs/encoders/vit3d/*.json (`m3d-full`, `m3d-small-fixture`) for `vit3d`
(M3D's 3D ViT; its dataclass defaults are M3D's full size).
"""

from __future__ import annotations

from pathlib import Path

from engine.encoders.ctvit import CTCLIPImageEncoder, CTViT, CTViTConfig, Trainable, count_parameters
from engine.encoders.vit3d import ViT3DConfig, ViT3DEncoder, ViT3DPatchEncoder
from engine.errors import ConfigError
from engine.registry import Registry

ENCODERS: Registry = Registry("encoder")
DEFAULT_ENCODER = "ctvit"  # CT-CLIP's CT-ViT: the family every recipe and `rad3d embed` build today
DEFAULT_ENCODER_CONFIG = "ctclip-full"  # CT-CLIP's public config
VIT3D_ENCODER = "vit3d"  # M3D's 3D ViT (M3D-CLIP's vision encoder, M3D-LaMed's vision tower)
VIT3D_PATCHES = "vit3d-patches"  # the same ViT giving its patch tokens (the spatial-pooling connector's input)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "encoders"
VIT3D_CONFIG_DIR = CONFIG_DIR / "vit3d"


def encoder_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_encoder_config(config: CTViTConfig | dict | str | Path | None = None) -> CTViTConfig:
    """A CTViTConfig from itself, a dict, a config name (e.g. "ctclip-full") or a JSON path.
    None means CT-CLIP's public config."""
    if config is None:
        config = DEFAULT_ENCODER_CONFIG
    if isinstance(config, CTViTConfig):
        return config
    if isinstance(config, dict):
        return CTViTConfig.from_dict(config)
    path = Path(config)
    if path.suffix != ".json":
        named = CONFIG_DIR / f"{config}.json"
        if not named.is_file():
            known = ", ".join(encoder_config_names())
            raise ConfigError(f"unknown encoder config {str(config)!r} (known: {known}, or a .json path)")
        path = named
    if not path.is_file():
        raise ConfigError("encoder config file not found", path)
    return CTViTConfig.from_json(path)


@ENCODERS.register(DEFAULT_ENCODER)
def build_ctvit(
    config: CTViTConfig | dict | str | Path | None = None, *, trainable: Trainable = "none"
) -> CTCLIPImageEncoder:
    """CT-CLIP-compatible CT-ViT encoder with random weights; load real ones with
    engine.encoders.checkpoint.load_ctclip_vision. Build under `with torch.device("meta"):`
    to count parameters without allocating (~328M, of which 2 x 151M are the projections)."""
    return CTCLIPImageEncoder(load_encoder_config(config), trainable=trainable)


@ENCODERS.register(VIT3D_ENCODER)
def build_vit3d(config: ViT3DConfig | dict | str | Path | None = None) -> ViT3DEncoder:
    """M3D's 3D ViT (+ M3D-CLIP's mm_vision_proj) with random weights, frozen; load real ones with
    engine.encoders.m3d_checkpoint.load_m3d_vision. config None: M3D's full size (87.4M + 0.59M)."""
    return ViT3DEncoder(load_vit3d_config(config))


@ENCODERS.register(VIT3D_PATCHES)
def build_vit3d_patches(config: ViT3DConfig | dict | str | Path | None = None) -> ViT3DPatchEncoder:
    """M3D's 3D ViT whose output is its patch tokens flattened (engine.encoders.vit3d.ViT3DPatchEncoder);
    the same checkpoints as vit3d."""
    return ViT3DPatchEncoder(load_vit3d_config(config))


def load_vit3d_config(config: ViT3DConfig | dict | str | Path | None = None) -> ViT3DConfig:
    """A ViT3DConfig from itself, a dict, a name in engine/configs/encoders/vit3d or a JSON path."""
    if config is None or isinstance(config, ViT3DConfig):
        return config or ViT3DConfig()
    if isinstance(config, dict):
        return ViT3DConfig.from_dict(config)
    path = Path(config)
    if path.suffix != ".json":
        path = VIT3D_CONFIG_DIR / f"{config}.json"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in VIT3D_CONFIG_DIR.glob("*.json")))
            raise ConfigError(f"unknown vit3d config {str(config)!r} (known: {known}, or a .json path)")
    if not path.is_file():
        raise ConfigError("encoder config file not found", path)
    return ViT3DConfig.from_json(path)


def load_encoder_weights(name: str, encoder, path: str | Path):
    """Load a local checkpoint into an encoder `ENCODERS.build(name, ...)` made, strictly, by the
    reader of that encoder's checkpoints (CT-CLIP's for ctvit, M3D's for vit3d)."""
    if name in (VIT3D_ENCODER, VIT3D_PATCHES):
        from engine.encoders.m3d_checkpoint import load_m3d_vision

        return load_m3d_vision(encoder, Path(path))
    from engine.encoders.checkpoint import load_ctclip_vision

    return load_ctclip_vision(encoder, Path(path))


__all__ = [
    "ENCODERS",
    "CONFIG_DIR",
    "DEFAULT_ENCODER",
    "DEFAULT_ENCODER_CONFIG",
    "VIT3D_ENCODER",
    "VIT3D_PATCHES",
    "CTCLIPImageEncoder",
    "CTViT",
    "CTViTConfig",
    "ViT3DConfig",
    "ViT3DEncoder",
    "build_ctvit",
    "build_vit3d",
    "count_parameters",
    "encoder_config_names",
    "load_encoder_config",
    "load_encoder_weights",
    "load_vit3d_config",
]
