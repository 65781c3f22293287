"""Training a report generator's trainable part (prefix connector; the decoder too for V-1/baseline,
LoRA adapters with --lora) on the embedding cache, with accelerate.

Recipe (the paper's defaults, all in TrainConfig): AdamW (lr 2e-5, weight decay 0.01), 10 epochs,
batch 8, prefix length 10, 8 connector layers; the loss is the NLL of the Findings tokens given the
prefix (ReportGenerator.loss masks prefix and padding). LR schedule: linear warmup over 5% of the
steps (or --warmup-steps), then linear decay to 0 (or cosine / constant).

Order of cases: each epoch is a permutation fixed by (seed, epoch), so a run resumed from a
checkpoint, mid-epoch too, sees the same batches as an uninterrupted one and ends at the same step
count; on the CPU it ends with the same weights. Validation (token-weighted NLL on the valid split)
runs after each epoch and every --eval-every-steps steps; the weights of the lowest validation
loss are kept and become the run's connector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.configs import TrainConfig
from training.loop import Recipe
from training.token_nll import target_nll, validation_loss

TRAIN_CONFIG_FILE = "train_config.json"


@dataclass
class TrainResult:
    run: Path
    step: int
    total_steps: int
    finished: bool  # False when stopped early (stop_at_step / time limit): resume to continue
    best_val_loss: float | None
    best_step: int | None
    trainable_params: int
    frozen_params: int
    model: torch.nn.Module | None = field(default=None, repr=False)  # the trained ReportGenerator (best weights once finished)


def train_connector(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop_at_step: int | None = None,
    time_limit_s: float | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    logits=None,
) -> TrainResult:
    """Train `config.variant` and, once all steps are done, write the inference run to config.out.

    resume: continue from RUN/checkpoints/last (a fresh start when there is none); without it an
    existing checkpoint is refused. stop_at_step / time_limit_s: stop early with a checkpoint (the
    schedule is unchanged), e.g. to spread a long CPU run over sessions. on_step(step, loss) is
    called after every optimiser step (tests use it to kill a run). `logits`: a
    training.synthetic_logits.SyntheticLogits replacing the cached classifier logits (the logit-quality
    curve; recorded in the checkpoint's identity and the run's notes). The loop is training/loop.py's."""
    from training.accelerate_utils import main_print, make_accelerator
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
    data = _connector_data(config, accelerator, logits)
    model, tokenizer = _report_generator(config, data, accelerator)
    trainable_params, frozen_params = model.count_parameters()
    identity = {**config.identity(), "decoder": decoder_signature(model.decoder),
                "num_processes": accelerator.num_processes, "train_cases": len(data.train),
                **({} if logits is None else {"logits": logits.describe()})}
    state = resume_state(checkpoint, identity)

    total_steps = config.epochs * steps_per_epoch(len(data.train), config.batch_size, accelerator.num_processes)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup = config.warmup_steps if config.warmup_steps is not None else int(0.05 * total_steps)
    model.to(accelerator.device)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=accelerator.device.type == "cuda")
    scheduler = make_scheduler(optimizer, warmup=warmup, total=total_steps, schedule=config.schedule)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / TRAIN_CONFIG_FILE).write_text(_json(config.to_dict()))
    settings = LoopSettings(total_steps, max_grad_norm=config.max_grad_norm, eval_every_steps=config.eval_every_steps,
                            save_every_steps=config.save_every_steps, stop_at_step=stop_at_step,
                            time_limit_s=time_limit_s, progress=progress, desc=f"train {config.variant}")
    loop = TrainLoop(accelerator, model, optimizer, scheduler, ConnectorRecipe(config, data, tokenizer, accelerator),
                     settings, state=state, run=out, checkpoint=checkpoint)
    if checkpoint is not None:
        main_print(accelerator, f"resuming {out} at step {state.step} of {total_steps} (epoch {state.epoch + 1}, "
                                f"{state.batches_done} batches in)")
    loop.run(on_step)

    result = TrainResult(out, state.step, total_steps, state.step >= total_steps, state.best_val_loss,
                         state.best_step, trainable_params, frozen_params, loop.unwrapped)
    if not result.finished:
        main_print(accelerator, f"stopped at step {state.step} of {total_steps}; rerun with --resume to continue")
        return result
    if accelerator.is_main_process:
        best = loop.best_weights()
        if best is not None:
            loop.unwrapped.load_trainable_state_dict(best, str(out / "checkpoints" / "best"))
        _write_finished_run(result, config, data, notes={
            "total_steps": total_steps, "warmup_steps": warmup,
            "schedule": f"linear warmup {warmup} steps, then {config.schedule}",
            "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
            **({} if logits is None else {"logits": logits.describe()})})
    accelerator.wait_for_everyone()
    return result


@dataclass
class ConnectorData:
    image: object  # engine.image_model.ImageModel (no encoder: latents come from the cache)
    dataset: object  # engine.data.CTRateDataset
    cache: object  # engine.cache.EmbeddingCache
    spec: object  # engine.variants.VariantSpec
    train: object  # training.data.ReportSplit
    valid: object


def _connector_data(config: TrainConfig, accelerator, logits=None) -> ConnectorData:
    """Image model, dataset, cache and the two report splits; the cache must be the image model's
    and hold every case. `logits` (SyntheticLogits) replace the cached ones once those are checked."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.errors import ConfigError
    from engine.image_model import open_image_model
    from engine.variants import get_variant
    from training.accelerate_utils import main_print
    from training.data import (
        check_cache_matches,
        check_logits_from_classifier,
        load_report_split,
    )

    spec = get_variant(config.variant)
    image = open_image_model(config.image_model, with_encoder=False)  # training reads latents from the cache
    dataset = resolve(config.data, label_set=image.label_set, section=config.section)
    cache = EmbeddingCache.open(config.cache)
    what = f"image model {image.source}"
    check_cache_matches(cache, encoder_name=image.spec.encoder.name, encoder_config=image.spec.encoder.config,
                        encoder_weights=image.spec.encoder.weights, preprocess_config=image.preprocess_config,
                        label_set=image.label_set, what=what)
    train = load_report_split(dataset, cache, config.train_split, with_logits=spec.uses_logits, section=config.section)
    valid = load_report_split(dataset, cache, config.valid_split, with_logits=spec.uses_logits, allow_empty=True,
                              section=config.section)
    for split in (train, valid):
        check_logits_from_classifier(split, image.classifier, image.label_set, cache.root, what=what)
    if logits is not None:
        if not spec.uses_logits:
            raise ConfigError(f"variant {spec.name} reads no logits: synthetic logits are for V-3")
        train, valid = logits.applied(train, dataset), logits.applied(valid, dataset)
    if train.without_text:
        main_print(accelerator, f"{len(train.without_text)} {config.train_split} cases have no {config.section} text; left out")
    if not len(valid):
        main_print(accelerator, f"warning: split {config.valid_split!r} is empty: no validation, the last weights are kept")
    return ConnectorData(image, dataset, cache, spec, train, valid)


def _report_generator(config: TrainConfig, data: ConnectorData, accelerator):
    """(ReportGenerator, tokenizer): the variant's connector (seeded) on the decoder."""
    from engine.decoders import LoraSettings, load_causal_lm
    from engine.model import build_report_generator

    # A frozen decoder can sit in bf16 on the GPU (half the memory); trained weights stay fp32
    # under autocast.
    frozen = not data.spec.decoder_trainable and not config.lora
    bf16 = accelerator.device.type == "cuda" and frozen and accelerator.mixed_precision == "bf16"
    decoder, tokenizer = load_causal_lm(config.decoder, gguf_file=config.gguf_file,
                                        dtype=torch.bfloat16 if bf16 else torch.float32)
    torch.manual_seed(config.seed)
    model = build_report_generator(
        data.spec.name, decoder, d_embed=data.cache.identity.latent_dim, n_labels=len(data.image.label_set),
        prefix_len=config.prefix_len, clip_len=config.clip_len, n_layers=config.layers, n_heads=config.heads,
        lora=LoraSettings() if config.lora else None,
    )
    return model, tokenizer


class ConnectorRecipe(Recipe):
    """The connector's part of the loop: report NLL of each batch, token-weighted validation NLL."""

    def __init__(self, config: TrainConfig, data: ConnectorData, tokenizer, accelerator):
        from training.data import ReportCollator, batch_loader, epoch_batches

        self.config, self.train, self.accelerator = config, data.train, accelerator
        self.collator = ReportCollator(data.train, tokenizer, config.max_report_tokens)
        self.valid_loader = None
        if len(data.valid):
            self.valid_loader = accelerator.prepare(batch_loader(
                data.valid, ReportCollator(data.valid, tokenizer, config.max_report_tokens),
                epoch_batches(len(data.valid), config.batch_size, seed=config.seed, epoch=0, shuffle=False),
                seed=config.seed))

    def epoch_loader(self, epoch: int):
        from training.data import batch_loader, epoch_batches

        c = self.config
        batches = epoch_batches(len(self.train), c.batch_size, seed=c.seed, epoch=epoch)
        return batch_loader(self.train, self.collator, batches, seed=c.seed + epoch)

    def loss(self, model, batch) -> torch.Tensor:
        return model(batch["latent"], batch.get("logits"), batch["input_ids"], batch["attention_mask"])

    def evaluate(self, model, epoch: int) -> float | None:
        return None if self.valid_loader is None else validation_loss(model, self.valid_loader, self.accelerator, per_case_nll)

    def weights(self, model) -> dict[str, torch.Tensor]:
        return model.trainable_state_dict()

    def load_weights(self, model, weights: dict[str, torch.Tensor], source: Path) -> None:
        model.load_trainable_state_dict(weights, str(source))


def _write_finished_run(result: TrainResult, config: TrainConfig, data: ConnectorData, *, notes: dict) -> None:
    """The inference run (best weights already in result.model) with its notes and domain guard."""
    from training.domain_guard import attach_domain_guard

    write_trained_run(result.run, result.model, data.image, config, notes={
        "training": {**config.to_dict(), **notes, "best_step": result.best_step,
                     "best_val_loss": result.best_val_loss, "train_cases": len(data.train),
                     "valid_cases": len(data.valid)},
        "parameters": {"trainable": result.trainable_params, "frozen": result.frozen_params},
    })
    guard = attach_domain_guard(result.run, data.dataset, data.cache, train_split=config.train_split,
                                valid_split=config.valid_split)
    print(guard.describe())
    best = "none (no validation split)" if result.best_val_loss is None else \
        f"{result.best_val_loss:.4f} at step {result.best_step}"
    print(f"wrote run {result.run}: {result.step} steps; trainable {result.trainable_params:,}, frozen "
          f"{result.frozen_params:,} parameters; best validation loss {best}")


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2)


def decoder_signature(decoder) -> str:
    """Architecture of the decoder (family, vocabulary, width, size), not its path: a checkpoint
    resumes on the same decoder moved elsewhere, never on another one."""
    cfg = decoder.config
    n = sum(p.numel() for p in decoder.parameters())
    text = f"{cfg.model_type}:{cfg.vocab_size}:{decoder.get_input_embeddings().embedding_dim}:{n}"
    return f"{text}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def per_case_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of report-token NLL, number of report tokens) per case, for a token-weighted mean."""
    prefix = model.prefix(batch["latent"], batch.get("logits"))
    inputs_embeds, mask, labels = model.build_inputs(prefix, batch["input_ids"], batch["attention_mask"])
    return target_nll(model.decoder, inputs_embeds, mask, labels)


# -- the written run -------------------------------------------------------------------------------
def write_trained_run(out: Path, model, image, config: TrainConfig, *, notes: dict):
    """The inference run: IMAGE's (an engine.image_model.ImageModel, its encoder referenced by path) classifier, the trained
    connector (and decoder weights when trained), the decoder referenced by path; its provenance is the
    image model's with the dataset the connector learned from and the decoder added."""
    from engine.generation import GenerationSettings
    from engine.image_model import load_encoder
    from engine.provenance import describe_dataset, describe_decoder
    from engine.rundir import write_run
    from training.image_model_common import report_valid_auroc

    spec = image.spec  # the image model's config, weights paths absolute
    # only its config is written; the weights file is referenced
    encoder = load_encoder(spec.encoder.name, spec.encoder.config, None)
    max_new = config.max_report_tokens or GenerationSettings().max_new_tokens
    decoder_config = model.decoder.config
    positions = getattr(decoder_config, "max_position_embeddings", None) or getattr(decoder_config, "n_positions", None)
    if positions:  # the prefix and the report must fit the decoder's positions
        max_new = min(max_new, positions - model.prefix_len)
    generation = GenerationSettings(max_new_tokens=max_new)
    return write_run(
        out, label_set=image.label_set, preprocess=image.preprocess_config, encoder_name=spec.encoder.name,
        encoder=encoder, classifier=image.classifier, thresholds=spec.classifier.thresholds,
        generator=model, decoder_path=config.decoder, gguf_file=config.gguf_file, generation=generation,
        notes=notes, encoder_weights=spec.encoder.weights, report_section=config.section,
        valid_auroc=spec.classifier.valid_auroc or report_valid_auroc(image.source, image.label_set.names),
        provenance=spec.provenance.merged(data=describe_dataset(config.data),
                                                  decoder=describe_decoder(config.decoder, gguf_file=config.gguf_file)),
    )
