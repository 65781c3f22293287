"""Loading a causal LM and its tokenizer from a LOCAL folder (never a hub download), and switching
it between frozen (V-2, V-3, linear variants) and trainable (V-1, baseline) modes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from engine.errors import ConfigError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_causal_lm(
    path: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    gguf_file: str | None = None,
    padding_side: str = "right",
):
    """(model, tokenizer) from a local folder holding config.json, weights and a tokenizer, or a
    GGUF file in that folder (`gguf_file=`; needs the `gguf` package; de-quantised to `dtype`).

    The tokenizer gets a pad token (its EOS) when it has none, and `padding_side` set explicitly:
    "right" suits training on report tokens; generation from a prefix builds its own left padding
    from embeddings and does not depend on it. Raises ConfigError naming the folder when it is not a
    causal LM (no config.json, an architecture that is not *ForCausalLM / *LMHeadModel, missing
    tokenizer or weights).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError("no such decoder folder", folder)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    extra: dict = {"local_files_only": True}
    if gguf_file is not None:
        if not (folder / gguf_file).is_file():
            raise ConfigError(f"no GGUF file {gguf_file!r} in the folder", folder)
        extra["gguf_file"] = gguf_file
    else:
        _check_causal_lm_folder(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    except Exception as err:  # transformers raises OSError, ValueError, TypeError... for a bad tokenizer
        raise ConfigError(f"cannot load the tokenizer: {err}", folder) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=_as_dtype(dtype) or torch.float32, **extra)
    except Exception as err:
        raise ConfigError(f"cannot load the causal LM: {err}", folder) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError("the tokenizer has neither a pad nor an EOS token", folder)
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if device is not None:
        model.to(device)
    return model, tokenizer


def _check_causal_lm_folder(folder: Path) -> None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConfigError("not a causal LM folder: no config.json", folder)
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"unreadable config.json: {err}", folder) from None
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(_CAUSAL_SUFFIXES) for a in architectures):
        raise ConfigError(f"not a causal LM: architectures are {', '.join(architectures)}", folder)
    if not architectures:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        model_type = config.get("model_type")
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ConfigError(f"not a causal LM: model_type {model_type!r} has no causal-LM head", folder)
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError("no tokenizer in the folder (tokenizer.json / tokenizer_config.json / vocab)", folder)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r} (use {', '.join(_DTYPES)})") from None


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode (dropout off): the frozen decoder of V-2/V-3."""
    model.requires_grad_(False)
    return model.eval()


def unfreeze(model: nn.Module) -> nn.Module:
    """Every parameter trainable (V-1 and the baseline fine-tune the decoder)."""
    model.requires_grad_(True)
    return model.train()


def weights_fingerprint(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Per-tensor (sum, sum of squares) in float64: cheap to keep, and any update changes it."""
    with torch.no_grad():
        return {
            name: (p.double().sum().item(), p.double().square().sum().item())
            for name, p in model.named_parameters()
            if p.device.type != "meta"
        }


def assert_weights_unchanged(model: nn.Module, fingerprint: dict[str, tuple[float, float]]) -> None:
    """Raise RuntimeError naming the first tensor whose values moved since `fingerprint`."""
    now = weights_fingerprint(model)
    changed = [name for name, value in now.items() if fingerprint.get(name) != value]
    if changed or set(now) != set(fingerprint):
        shown = ", ".join(changed[:5]) or "parameter set"
        raise RuntimeError(f"frozen decoder weights changed: {shown}")
