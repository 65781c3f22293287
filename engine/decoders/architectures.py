"""Architecture configs of the paper's decoders (causal LLMs), shipped as JSON (no weights) in engine/configs/decoders/,
so parameter counts and shapes can be worked out on the meta device without downloading anything."""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import ConfigError

DECODER_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "decoders"


def decoder_config_names() -> list[str]:
    return sorted(p.stem for p in DECODER_CONFIG_DIR.glob("*.json"))


def load_decoder_config(name_or_path: str | Path):
    """A transformers PretrainedConfig from a shipped name ("llama-3.2-1b") or a config.json path."""
    from transformers import AutoConfig

    path = DECODER_CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        path = Path(name_or_path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"no decoder config {str(name_or_path)!r}: not shipped ({', '.join(decoder_config_names())}) nor a file"
            )
    try:
        data = json.loads(path.read_text())
        model_type = data.pop("model_type")
        data.pop("architectures", None)
        return AutoConfig.for_model(model_type, **data)
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as err:
        raise ConfigError(f"not a transformers model config: {err}", path) from None


def build_meta_causal_lm(name_or_path: str | Path):
    """The causal LM of that config with every tensor on the meta device: shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    config = load_decoder_config(name_or_path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
