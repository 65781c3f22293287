"""Optional LoRA adapters on the decoder (peft), with target modules chosen per architecture
family: the attention projections each family names differently."""

from __future__ import annotations

from torch import nn

from engine.errors import ConfigError
from engine.model_configs import LoraSettings  # defined without torch (a run's config holds it)

# model_type → attention projections to adapt (queries and values, as in the LoRA paper).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn",),  # GPT-2 fuses q, k, v into one Conv1D
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "biogpt": ("q_proj", "v_proj"),
    "opt": ("q_proj", "v_proj"),
    "gpt_neox": ("query_key_value",),
    "phi3": ("qkv_proj",),
}


def lora_targets(model: nn.Module) -> tuple[str, ...]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        return LORA_TARGETS[model_type]
    except KeyError:
        raise ConfigError(
            f"no LoRA target modules known for model type {model_type!r}; give target_modules "
            f"(known families: {', '.join(sorted(LORA_TARGETS))})"
        ) from None


def apply_lora(model: nn.Module, settings: LoraSettings | None = None) -> nn.Module:
    """The model wrapped by peft with LoRA adapters (default LoraSettings()): only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    targets = settings.target_modules or lora_targets(model)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets),
        task_type="CAUSAL_LM",
        # GPT-2's Conv1D stores weights transposed (fan_in, fan_out).
        fan_in_fan_out=getattr(model.config, "model_type", None) == "gpt2",
    )
    return get_peft_model(model, config)
