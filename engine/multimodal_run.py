"""The multimodal system's run directory (engine.multimodal), a peer of engine.rundir's:

    RUN/config.json         MultimodalRunConfig (format "rad3d-multimodal-run/1"): tasks, stage, LoRA settings, ...
    RUN/image_model.json    the frozen image model whose features the connector reads (engine.rundir.ImageModelConfig)
    RUN/connector.safetensors
    RUN/decoder/            stage 2: the decoder with its LoRA adapters merged in (+ tokenizer): loads without peft;
                            stage 1 references the unchanged decoder by path instead
    RUN/metrics.csv, RUN/train_config.json, RUN/checkpoints/   training only

`run_kind(RUN)` tells the two systems' runs apart from config.json's format alone (torch-free), so
a command refuses a run of the other kind in one line before any model loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.config import JsonConfig, coerce_nested, write_json
from engine.errors import ConfigError
from engine.model_configs import MULTIMODAL_TASKS, GenerationSettings, LoraSettings, MultimodalConfig, Task
from engine.provenance import Provenance
from engine.rundir import CONFIG_FILE, IMAGE_MODEL_FILE, RUN_FORMAT, DecoderSpec, _formatted, read_run_config

MULTIMODAL_RUN_FORMAT = "rad3d-multimodal-run/1"
RUN_KINDS = {RUN_FORMAT: "prefix", MULTIMODAL_RUN_FORMAT: "multimodal"}
MERGED_DECODER_DIR = "decoder"


@dataclass
class MultimodalRunConfig(JsonConfig):
    tasks: tuple[Task, ...]  # what it was trained for: "report", "vqa"
    stage: Literal[1, 2]  # 1: connector only; 2: connector + LoRA (merged into RUN/decoder)
    model: MultimodalConfig
    decoder: DecoderSpec
    connector_weights: str = "connector.safetensors"
    lora: LoraSettings | None = None  # stage 2's adapters (merged into the decoder)
    report_section: str = "findings"  # the section a report answers (task "report")
    # what of the image model the connector reads: "latent" (one vector a volume, e.g. CT-CLIP's),
    # "patch-tokens" (ViT3D's tower tokens, encoder vit3d-patches), "none" (the text-only baseline)
    image_features: Literal["latent", "patch-tokens", "none"] = "latent"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    notes: dict = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)

    _json_in, _json_out = _formatted("multimodal run config", MULTIMODAL_RUN_FORMAT)

    def __post_init__(self):
        coerce_nested(self)
        self.tasks = tuple(self.tasks)
        unknown = [t for t in self.tasks if t not in MULTIMODAL_TASKS]
        if not self.tasks or unknown:
            raise ConfigError(f"tasks must be some of {', '.join(MULTIMODAL_TASKS)}, got {list(self.tasks)}")
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")


@dataclass
class MultimodalRun:
    root: Path
    config: MultimodalRunConfig

    def resolve(self, path: str) -> Path:
        """A path of the config: relative to the run unless absolute."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (self.root / p).resolve()


def run_kind(root: str | Path) -> str:
    """"prefix" (RAD3D-Prefix, engine.rundir) or "multimodal" (this module), from config.json's format;
    ConfigError naming the folder when it is no run."""
    path, data = read_run_config(root)
    kind = RUN_KINDS.get(data.get("format")) if isinstance(data, dict) else None
    if kind is None:
        found = data.get("format") if isinstance(data, dict) else None
        raise ConfigError(f"not a rad3d run (format {found!r}; known: {', '.join(RUN_KINDS)})", path)
    return kind


def is_multimodal_run(root: str | Path) -> bool:
    """Whether RUN is a multimodal run; False for anything else (a broken run is for its own loader to name)."""
    try:
        return run_kind(root) == "multimodal"
    except ConfigError:
        return False


def open_multimodal_run(root: str | Path, *, check: bool = True) -> MultimodalRun:
    """The run; one of the other kind is refused by name, an incomplete one names what is missing."""
    root = Path(root)
    kind = run_kind(root)
    if kind != "multimodal":
        raise ConfigError(f"run {root} is a {kind} run (RAD3D-Prefix), not an image-token + LoRA run", root)
    path = root / CONFIG_FILE
    config = MultimodalRunConfig.from_dict(json.loads(path.read_text()), path)
    run = MultimodalRun(root.resolve(), config)
    if check:
        files = {"connector weights": run.resolve(config.connector_weights), "decoder": run.resolve(config.decoder.path),
                 "image model": run.root / IMAGE_MODEL_FILE}
        missing = [f"{role} ({p})" for role, p in files.items() if not p.exists()]
        if missing:
            raise ConfigError("run directory is incomplete, missing: " + "; ".join(missing), run.root)
    return run


def save_multimodal_run_config(root: str | Path, config: MultimodalRunConfig) -> Path:
    return write_json(Path(root) / CONFIG_FILE, config.to_dict())


def write_multimodal_run(root: str | Path, model, tokenizer, *, image_model, tasks, stage: int, decoder_path: str | Path,
                         gguf_file: str | None = None, lora: LoraSettings | None = None, report_section: str = "findings",
                         max_new_tokens: int = 256, notes: dict | None = None,
                         provenance: Provenance | None = None) -> MultimodalRun:
    """Save an engine.multimodal.MultimodalModel as a run: the image model's config (image_model, an
    ImageModelConfig with absolute weights paths), the connector, and the decoder: stage 2's with the
    LoRA adapters merged in (saved with its tokenizer), stage 1's referenced by path (unchanged)."""
    from safetensors.torch import save_file

    from engine.rundir import save_image_model

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    save_image_model(root, image_model)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.connector.state_dict().items()},
              str(root / "connector.safetensors"))
    if model.config.decoder_mode == "lora":
        save_merged_decoder(model.merged_decoder(), tokenizer, root / MERGED_DECODER_DIR)
        decoder = DecoderSpec(path=MERGED_DECODER_DIR)
    else:
        decoder = DecoderSpec(path=str(Path(decoder_path).resolve()), gguf_file=gguf_file)
    config = MultimodalRunConfig(
        tasks=tuple(tasks), stage=stage, model=model.config, decoder=decoder, lora=lora, report_section=report_section,
        image_features="none" if not model.config.use_image else
        "patch-tokens" if model.config.connector.kind == "spatial-pooling" else "latent",
        generation=GenerationSettings(max_new_tokens=max_new_tokens), notes=dict(notes or {}),
        provenance=provenance or Provenance())
    save_multimodal_run_config(root, config)
    return open_multimodal_run(root)


def save_merged_decoder(decoder, tokenizer, folder: Path) -> None:
    """A plain Hugging Face folder (config, safetensors, tokenizer) that load_causal_lm reads."""
    if getattr(decoder, "hf_quantizer", None) is not None:  # de-quantised from GGUF: save as plain weights
        decoder.hf_quantizer = None
    if hasattr(decoder.config, "quantization_config"):
        del decoder.config.quantization_config
    decoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
