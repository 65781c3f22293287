"""Decoders: causal LMs that continue a prefix into report text.

`DECODERS` maps a source kind to a loader returning (model, tokenizer):
    local   a folder with config.json, weights and tokenizer (`load_causal_lm`)
    gguf    a GGUF file in a folder, de-quantised by transformers (`load_causal_lm(gguf_file=...)`)
    meta    a shipped architecture config built on the meta device, no tokenizer (parameter counts)
"""

from __future__ import annotations

from engine.decoders.architectures import build_meta_causal_lm, llm_config_names, load_llm_config
from engine.decoders.loading import (
    assert_weights_unchanged,
    freeze,
    load_causal_lm,
    unfreeze,
    weights_fingerprint,
)
from engine.decoders.lora import LORA_TARGETS, LoraSettings, apply_lora, lora_targets
from engine.registry import Registry

DECODERS: Registry = Registry("decoder source")
DECODERS.register("local")(load_causal_lm)
DECODERS.register("gguf")(lambda path, gguf_file, **kw: load_causal_lm(path, gguf_file=gguf_file, **kw))
DECODERS.register("meta")(lambda name, **kw: (build_meta_causal_lm(name), None))

__all__ = [
    "DECODERS",
    "LORA_TARGETS",
    "LoraSettings",
    "apply_lora",
    "assert_weights_unchanged",
    "build_meta_causal_lm",
    "freeze",
    "llm_config_names",
    "load_causal_lm",
    "load_llm_config",
    "lora_targets",
    "unfreeze",
    "weights_fingerprint",
]
