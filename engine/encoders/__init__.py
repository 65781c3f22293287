"""Image encoders, chosen by name: `ENCODERS.build(DEFAULT_ENCODER, config)`.

Named configs live in engine/configs/encoders/*.json (`ctclip-full`, `ctclip-small-fixture`).
"""

from __future__ import annotations

from pathlib import Path

from engine.encoders.ctvit import CTCLIPImageEncoder, CTViT, CTViTConfig, Trainable, count_parameters
from engine.errors import ConfigError
from engine.registry import Registry

ENCODERS: Registry = Registry("encoder")
DEFAULT_ENCODER = "ctvit"  # CT-CLIP's CT-ViT: the family every recipe and `rad3d embed` build today
DEFAULT_ENCODER_CONFIG = "ctclip-full"  # CT-CLIP's public config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "encoders"


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


__all__ = [
    "ENCODERS",
    "CONFIG_DIR",
    "DEFAULT_ENCODER",
    "DEFAULT_ENCODER_CONFIG",
    "CTCLIPImageEncoder",
    "CTViT",
    "CTViTConfig",
    "build_ctvit",
    "count_parameters",
    "encoder_config_names",
    "load_encoder_config",
]
