"""Training the multimodal system (engine.multimodal) on the embedding cache, on the one loop
(training/loop.py), in M3D's two stages:

- stage 1: the connector alone learns, the decoder frozen (M3D's projector pretraining);
- stage 2: the connector (from the stage-1 run, `init_from`) and LoRA adapters on the decoder.

Loss: the NLL of the answer tokens and EOS (report sections and/or VQA answers, training/
multimodal_data.py); validation: the token-weighted answer NLL on the valid split, the lowest kept.
Each epoch's order is fixed by (seed, epoch) (training.data.epoch_batches), so a resumed run, mid-epoch
too, trains exactly as an uninterrupted one. The finished run (engine.multimodal_run): the image
model, the connector, and in stage 2 the decoder with the adapters merged in (no peft to load it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import ConfigError
from engine.multimodal import PromptBatch
from training.configs import MultimodalTrainConfig
from training.loop import Recipe
from training.token_nll import target_nll, validation_loss

TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class MultimodalResult:
    run: Path
    step: int
    total_steps: int
    finished: bool  # False when stopped early: resume to continue
    best_val_loss: float | None
    best_step: int | None
    parameters: dict  # part -> (trainable, frozen)
    model: torch.nn.Module | None = field(default=None, repr=False)


@dataclass
class MultimodalData:
    image: object  # engine.rundir.ImageModelConfig, weights paths absolute
    dataset: object
    cache: object
    train: object  # training.multimodal_data.MultimodalSplit
    valid: object


def train_multimodal(config: MultimodalTrainConfig, *, resume: bool = False, stop_at_step: int | None = None,
                     time_limit_s: float | None = None, progress: bool = True,
                     on_step: Callable[[int, float], None] | None = None) -> MultimodalResult:
    """Train one stage and, once all steps are done, write the run to config.out (see module doc)."""
    from training.accelerate_utils import main_print, make_accelerator
    from training.connector_recipe import decoder_signature
    from training.loop import (
        LoopSettings,
        TrainLoop,
        checkpoint_to_resume,
        make_scheduler,
        resume_state,
        steps_per_epoch,
    )

    out = Path(config.out)
    checkpoint = checkpoint_to_resume(out, resume)
    accelerator = make_accelerator(config.mixed_precision)
    data = _multimodal_data(config)
    model, tokenizer = build_multimodal_model(config, data.cache.identity.latent_dim, len(data.image.label_set),
                                              encoder=data.image.encoder)
    identity = {**config.identity(), "decoder": decoder_signature(model.decoder),
                "num_processes": accelerator.num_processes, "train_examples": len(data.train)}
    state = resume_state(checkpoint, identity)
    total = config.epochs * steps_per_epoch(len(data.train), config.batch_size, accelerator.num_processes)
    total = min(total, config.max_steps) if config.max_steps is not None else total
    warmup = config.warmup_steps if config.warmup_steps is not None else int(0.05 * total)
    model.to(accelerator.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, warmup=warmup, total=total, schedule=config.schedule)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / TRAIN_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
    settings = LoopSettings(total, max_grad_norm=config.max_grad_norm, eval_every_steps=config.eval_every_steps,
                            save_every_steps=config.save_every_steps, stop_at_step=stop_at_step,
                            time_limit_s=time_limit_s, progress=progress, desc=f"train stage {config.stage}")
    loop = TrainLoop(accelerator, model, optimizer, scheduler, MultimodalRecipe(config, data, tokenizer, accelerator),
                     settings, state=state, run=out, checkpoint=checkpoint)
    if checkpoint is not None:
        main_print(accelerator, f"resuming {out} at step {state.step} of {total}")
    loop.run(on_step)
    result = MultimodalResult(out, state.step, total, state.step >= total, state.best_val_loss, state.best_step,
                              loop.unwrapped.count_parameters(), loop.unwrapped)
    if not result.finished:
        main_print(accelerator, f"stopped at step {state.step} of {total}; rerun with --resume to continue")
        return result
    if accelerator.is_main_process:
        best = loop.best_weights()
        if best is not None:
            result.model.load_trainable_state_dict(best, str(out / "checkpoints" / "best"))
        write_multimodal_run(result, config, data, tokenizer, notes={"total_steps": total, "warmup_steps": warmup})
    accelerator.wait_for_everyone()
    return result


def _multimodal_data(config: MultimodalTrainConfig) -> MultimodalData:
    """Image model, dataset, cache (the image model's, checked) and the train and valid examples."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.rundir import load_image_model
    from engine.vqa import dataset_vqa
    from training.data import check_cache_matches
    from training.multimodal_data import load_multimodal_split

    root, image = load_image_model(config.image_model)
    section = config.section if "report" in config.tasks else None
    dataset = resolve(config.data, label_set=image.label_set, **({"section": section} if section else {}))
    vqa_items = dataset_vqa(dataset) if "vqa" in config.tasks else None
    cache = EmbeddingCache.open(config.cache)
    check_cache_matches(cache, encoder_name=image.encoder.name, encoder_config=image.encoder.config,
                        encoder_weights=image.encoder.weights, preprocess_config=image.preprocess,
                        label_set=image.label_set, what=f"image model {root}")
    split = dict(tasks=config.tasks, section=config.section, vqa_items=vqa_items, with_logits=config.with_logits)
    train = load_multimodal_split(dataset, cache, config.train_split, **split)
    valid = load_multimodal_split(dataset, cache, config.valid_split, allow_empty=True, **split)
    return MultimodalData(image, dataset, cache, train, valid)


def build_multimodal_model(config: MultimodalTrainConfig, d_features: int, n_labels: int, *, encoder=None):
    """(MultimodalModel, tokenizer) of the stage: the connector seeded (stage 2: the stage-1 run's).
    `encoder`: the image model's EncoderSpec, which a spatial-pooling connector takes its grid from."""
    from engine.decoders import load_causal_lm
    from engine.model_configs import ConnectorConfig, MultimodalConfig
    from engine.multimodal import MultimodalModel

    decoder, tokenizer = load_causal_lm(config.decoder, gguf_file=config.gguf_file)
    d_llm, labels = decoder.get_input_embeddings().embedding_dim, n_labels if config.with_logits else 0
    if config.connector == "spatial-pooling":
        connector = spatial_pooling_config(config, encoder, d_llm, labels)
    else:
        connector = ConnectorConfig(kind=config.connector, d_embed=d_features, n_labels=labels, d_llm=d_llm,
                                    prefix_len=config.image_tokens, clip_len=config.image_tokens, n_layers=2)
    mode = "lora" if config.stage == 2 else "frozen"
    torch.manual_seed(config.seed)
    model = MultimodalModel(MultimodalConfig(connector, mode, use_image=config.image), decoder,
                            lora_settings(config) if mode == "lora" else None)
    if config.init_from:
        from engine.multimodal_run import open_multimodal_run
        from engine.weights import load_weights_strict

        stage1 = open_multimodal_run(config.init_from)
        if stage1.config.model.connector != connector:
            raise ConfigError(f"its connector {stage1.config.model.connector} is not this stage's {connector}",
                              stage1.root)
        load_weights_strict(model.connector, stage1.resolve(stage1.config.connector_weights), "connector")
    return model, tokenizer


def spatial_pooling_config(config: MultimodalTrainConfig, encoder, d_llm: int, n_labels: int):
    """M3D's projector on the ViT3D patch encoder's token grid; its token count is the grid's, so
    --image-tokens must name it (M3D: 256)."""
    from engine.encoders import VIT3D_PATCHES, load_vit3d_config
    from engine.model_configs import SpatialPoolingConfig

    if encoder is None or encoder.name != VIT3D_PATCHES:
        raise ConfigError(f"the spatial-pooling connector reads ViT3D patch tokens: the image model's encoder must be "
                          f"{VIT3D_PATCHES!r}, not {getattr(encoder, 'name', None)!r}")
    vit = load_vit3d_config(encoder.config)
    connector = SpatialPoolingConfig(d_embed=vit.hidden_size, d_llm=d_llm, token_grid=vit.grid, n_labels=n_labels)
    if connector.prefix_len != config.image_tokens:
        raise ConfigError(f"--image-tokens must be {connector.prefix_len} for the spatial-pooling connector on the "
                          f"encoder's {vit.grid} token grid (pooled {connector.pooled_grid}), got {config.image_tokens}")
    return connector


def lora_settings(config: MultimodalTrainConfig):
    from engine.model_configs import LoraSettings

    return LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                        target_modules=config.lora_targets)


def prompts_of(batch: dict) -> PromptBatch:
    return PromptBatch(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["image_start"])


class MultimodalRecipe(Recipe):
    """The multimodal model's part of the loop: answer NLL per batch, token-weighted validation NLL."""

    def __init__(self, config: MultimodalTrainConfig, data: MultimodalData, tokenizer, accelerator):
        from training.data import batch_loader, epoch_batches
        from training.multimodal_data import MultimodalCollator

        self.config, self.train, self.accelerator = config, data.train, accelerator
        n_image = config.image_tokens if config.image else 0
        self.collator = MultimodalCollator(data.train, tokenizer, n_image, config.max_answer_tokens)
        self.valid_loader = None
        if len(data.valid):
            collator = MultimodalCollator(data.valid, tokenizer, n_image, config.max_answer_tokens)
            batches = epoch_batches(len(data.valid), config.batch_size, seed=config.seed, epoch=0, shuffle=False)
            self.valid_loader = accelerator.prepare(batch_loader(data.valid, collator, batches, seed=config.seed))

    def epoch_loader(self, epoch: int):
        from training.data import batch_loader, epoch_batches

        c = self.config
        batches = epoch_batches(len(self.train), c.batch_size, seed=c.seed, epoch=epoch)
        return batch_loader(self.train, self.collator, batches, seed=c.seed + epoch)

    def loss(self, model, batch) -> torch.Tensor:
        return model(batch["features"], batch.get("logits"), prompts_of(batch))

    def evaluate(self, model, epoch: int) -> float | None:
        return None if self.valid_loader is None else validation_loss(model, self.valid_loader, self.accelerator, answer_nll)

    def weights(self, model) -> dict[str, torch.Tensor]:
        return model.trainable_state_dict()

    def load_weights(self, model, weights: dict[str, torch.Tensor], source: Path) -> None:
        model.load_trainable_state_dict(weights, str(source))


def answer_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of answer-token NLL, number of answer tokens) per example."""
    prompts = prompts_of(batch)
    embeds = model.splice(model.image_tokens(batch["features"], batch.get("logits")), prompts)
    return target_nll(model.decoder, embeds, prompts.attention_mask, prompts.labels)


def write_multimodal_run(result: MultimodalResult, config: MultimodalTrainConfig, data: MultimodalData, tokenizer, *,
                         notes: dict) -> None:
    """The finished run (engine.multimodal_run.write_multimodal_run) with the training's notes."""
    from engine.multimodal_run import write_multimodal_run as write
    from engine.provenance import describe_dataset, describe_decoder

    model = result.model
    positions = _positions(model.decoder.config)
    longest = max((len(tokenizer(e.instruction)["input_ids"]) for e in data.train.examples), default=0)
    max_new = config.max_answer_tokens or 256
    if positions:  # BOS, image tokens, instruction and answer must fit the decoder's positions
        max_new = max(1, min(max_new, positions - model.n_image - longest - 1))
    provenance = data.image.provenance.merged(data=describe_dataset(config.data),
                                               decoder=describe_decoder(config.decoder, gguf_file=config.gguf_file))
    write(result.run, model, tokenizer, image_model=data.image, tasks=config.tasks, stage=config.stage,
          decoder_path=config.decoder, gguf_file=config.gguf_file,
          lora=lora_settings(config) if config.stage == 2 else None, report_section=config.section,
          max_new_tokens=max_new, provenance=provenance,
          notes={"training": {**config.to_dict(), **notes, "best_step": result.best_step,
                              "best_val_loss": result.best_val_loss, "train_examples": len(data.train),
                              "valid_examples": len(data.valid)},
                 "parameters": {k: {"trainable": t, "frozen": f} for k, (t, f) in result.parameters.items()}})
    best = "none (no validation split)" if result.best_val_loss is None else \
        f"{result.best_val_loss:.4f} at step {result.best_step}"
    print(f"wrote stage-{config.stage} run {result.run}: {result.step} steps; best validation loss {best}")


def _positions(decoder_config) -> int | None:
    return getattr(decoder_config, "max_position_embeddings", None) or getattr(decoder_config, "n_positions", None)
