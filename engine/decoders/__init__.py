"""Decoders: causal LMs that continue a prefix into report text. A run names its decoder by path
(`DecoderSpec`), not by a registered kind, so there is no decoder registry:
    `load_causal_lm(folder)`                   a folder with config.json, weights and tokenizer
    `load_causal_lm(folder, gguf_file=...)`    a GGUF file in a folder, de-quantised by transformers
    `build_meta_causal_lm(name)`               a shipped architecture config on the meta device (parameter counts)
"""

from __future__ import annotations

from engine.decoders.architectures import build_meta_causal_lm, decoder_config_names, load_decoder_config
from engine.decoders.loading import (
    assert_weights_unchanged,
    freeze,
    load_causal_lm,
    unfreeze,
    weights_fingerprint,
)
from engine.decoders.lora import LORA_TARGETS, LoraSettings, apply_lora, lora_targets

__all__ = [
    "LORA_TARGETS",
    "LoraSettings",
    "apply_lora",
    "assert_weights_unchanged",
    "build_meta_causal_lm",
    "freeze",
    "decoder_config_names",
    "load_causal_lm",
    "load_decoder_config",
    "lora_targets",
    "unfreeze",
    "weights_fingerprint",
]
