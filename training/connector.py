"""Training a report generator's trainable part (prefix mapper; the decoder too for V-1/baseline,
LoRA adapters with --lora) on the embedding cache, with accelerate.

Recipe (the paper's defaults, all in TrainConfig): AdamW (lr 2e-5, weight decay 0.01), 10 epochs,
batch 8, prefix length 10, 8 mapper layers; the loss is the NLL of the Findings tokens given the
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
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from engine.errors import CheckpointError, ConfigError
from engine.model import IGNORE_INDEX
from training.checkpointing import (
    MetricsLog,
    TrainState,
    find_checkpoint,
    load_optimizer_state,
    read_state,
    read_trainable,
    save_checkpoint,
)
from training.configs import SCHEDULES, TrainConfig  # noqa: F401 (defined without torch, for the CLI)

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
) -> TrainResult:
    """Train `config.variant` and, once all steps are done, write the inference run to config.out.

    resume: continue from RUN/checkpoints/last (a fresh start when there is none); without it an
    existing checkpoint is refused. stop_at_step / time_limit_s: stop early with a checkpoint (the
    schedule is unchanged), e.g. to spread a long CPU run over sessions. on_step(step, loss) is
    called after every optimiser step (tests use it to kill a run)."""
    from tqdm.auto import tqdm

    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.decoders import LoraSettings, load_causal_lm
    from engine.model import build_report_generator
    from engine.variants import get_variant
    from training.accelerate_utils import main_print, make_accelerator
    from training.data import (
        ReportCollator,
        batch_loader,
        check_cache_matches,
        check_logits_from_classifier,
        epoch_batches,
        load_report_split,
    )

    started = time.monotonic()
    out = Path(config.out)
    spec = get_variant(config.variant)
    checkpoint = find_checkpoint(out)
    if checkpoint is not None and not resume:
        step = read_state(checkpoint).step
        raise ConfigError(f"already holds a training checkpoint (step {step}); pass --resume to continue it "
                          "or choose another --out", out)
    accelerator = make_accelerator(config.mixed_precision)

    # -- data: the cache must be the image model's, and hold every case --------------------------
    image = load_image_side(config.image_model)
    dataset = resolve(config.data, label_set=image.label_set, section=config.section)
    cache = EmbeddingCache.open(config.cache)
    what = f"image model {image.root}"
    check_cache_matches(cache, encoder_name=image.config.encoder.name, encoder_config=image.config.encoder.config,
                        encoder_weights=image.config.encoder.weights, preprocess_config=image.preprocess,
                        label_set=image.label_set, what=what)
    train = load_report_split(dataset, cache, config.train_split, with_logits=spec.uses_logits, section=config.section)
    valid = load_report_split(dataset, cache, config.valid_split, with_logits=spec.uses_logits, allow_empty=True,
                              section=config.section)
    for split in (train, valid):
        check_logits_from_classifier(split, image.classifier, image.label_set, cache.root, what=what)
    if train.without_text:
        main_print(accelerator, f"{len(train.without_text)} {config.train_split} cases have no {config.section} text; left out")
    if not len(valid):
        main_print(accelerator, f"warning: split {config.valid_split!r} is empty: no validation, the last weights are kept")

    # -- model ------------------------------------------------------------------------------------
    cuda = accelerator.device.type == "cuda"
    # A frozen decoder can sit in bf16 on the GPU (half the memory); trained weights stay fp32
    # under autocast.
    frozen = not spec.decoder_trainable and not config.lora
    dtype = torch.bfloat16 if cuda and frozen and accelerator.mixed_precision == "bf16" else torch.float32
    decoder, tokenizer = load_causal_lm(config.llm, gguf_file=config.gguf_file, dtype=dtype)
    torch.manual_seed(config.seed)
    model = build_report_generator(
        spec.name, decoder, d_embed=cache.identity.latent_dim, n_labels=len(image.label_set),
        prefix_len=config.prefix_len, clip_len=config.clip_len, n_layers=config.layers, n_heads=config.heads,
        lora=LoraSettings() if config.lora else None,
    )
    trainable_params, frozen_params = model.count_parameters()
    identity = {**config.identity(), "decoder": decoder_signature(decoder),
                "num_processes": accelerator.num_processes, "train_cases": len(train)}

    state = TrainState(run_config=identity)
    if checkpoint is not None:
        state = read_state(checkpoint)
        if state.run_config != identity:
            differ = sorted(k for k in set(identity) | set(state.run_config or {})
                            if (state.run_config or {}).get(k) != identity.get(k))
            detail = ", ".join(f"{k}: checkpoint {(state.run_config or {}).get(k)!r}, now {identity.get(k)!r}" for k in differ)
            raise CheckpointError(f"cannot resume: settings differ from the checkpoint's ({detail})", checkpoint)
        model.load_trainable_state_dict(read_trainable(checkpoint), str(checkpoint / "trainable.safetensors"))
    model.to(accelerator.device)

    n_batches = math.ceil(len(train) / config.batch_size)
    steps_per_epoch = math.ceil(n_batches / accelerator.num_processes)  # accelerate's even_batches
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup = config.warmup_steps if config.warmup_steps is not None else int(0.05 * total_steps)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=accelerator.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.schedule, warmup, total_steps))
    if checkpoint is not None:
        load_optimizer_state(checkpoint, optimizer, scheduler)
        main_print(accelerator, f"resuming {out} at step {state.step} of {total_steps} (epoch {state.epoch + 1}, "
                                f"{state.batches_done} batches in)")
    # The scheduler is stepped by hand once per optimiser step: accelerate's wrapper would step it
    # once per process, for step counts measured on one process.
    model, optimizer = accelerator.prepare(model, optimizer)
    collator = ReportCollator(train, tokenizer, config.max_report_tokens)
    valid_loader = None
    if len(valid):
        valid_loader = accelerator.prepare(batch_loader(
            valid, ReportCollator(valid, tokenizer, config.max_report_tokens),
            epoch_batches(len(valid), config.batch_size, seed=config.seed, epoch=0, shuffle=False), seed=config.seed))

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / TRAIN_CONFIG_FILE).write_text(_json(config.to_dict()))
        if checkpoint is None:  # a fresh start: nothing of an earlier, unfinished attempt may count as best
            for stale in (out / "checkpoints").glob("best*"):
                shutil.rmtree(stale)
    log = MetricsLog(out, resume_step=state.step if checkpoint is not None else None) if accelerator.is_main_process else None

    def save(name: str, with_optimizer: bool) -> None:
        if accelerator.is_main_process:
            weights = accelerator.unwrap_model(model).trainable_state_dict()
            save_checkpoint(out, name, state, weights, optimizer=optimizer if with_optimizer else None,
                            scheduler=scheduler if with_optimizer else None)
        accelerator.wait_for_everyone()

    bar = tqdm(total=total_steps, initial=state.step, desc=f"train {spec.name}", unit="step",
               disable=not (progress and accelerator.is_local_main_process), dynamic_ncols=True)
    stopped = False
    try:
        while state.step < total_steps and not stopped:
            batches = epoch_batches(len(train), config.batch_size, seed=config.seed, epoch=state.epoch)
            loader = accelerator.prepare(batch_loader(train, collator, batches, seed=config.seed + state.epoch))
            epoch_len = len(loader)
            if state.batches_done:
                loader = accelerator.skip_first_batches(loader, state.batches_done)
            for batch in loader:
                t0 = time.perf_counter()
                model.train()
                loss = model(batch["latent"], batch.get("logits"), batch["input_ids"], batch["attention_mask"])
                accelerator.backward(loss)
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_value = accelerator.reduce(loss.detach().float(), "mean").item()
                state.step += 1
                state.batches_done += 1
                samples_per_s = len(batch["index"]) * accelerator.num_processes / (time.perf_counter() - t0)

                epoch_of_step = state.epoch + 1  # 1-based, for the log
                end_of_epoch = state.batches_done >= epoch_len
                last = state.step >= total_steps
                val_loss = None
                if valid_loader is not None and (end_of_epoch or last or _every(state.step, config.eval_every_steps)):
                    val_loss = validation_loss(model, valid_loader, accelerator)
                if end_of_epoch:
                    state.epoch += 1
                    state.batches_done = 0
                if val_loss is not None and (state.best_val_loss is None or val_loss < state.best_val_loss):
                    state.best_val_loss, state.best_step = val_loss, state.step
                    save("best", with_optimizer=False)
                if log is not None:
                    log.write(step=state.step, epoch=epoch_of_step, loss=loss_value,
                              lr=lr, val_loss=val_loss, samples_per_s=samples_per_s)
                stopped = (stop_at_step is not None and state.step >= stop_at_step) or (
                    time_limit_s is not None and time.monotonic() - started >= time_limit_s)
                state.finished = last
                if end_of_epoch or last or stopped or _every(state.step, config.save_every_steps):
                    save("last", with_optimizer=True)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", samples_s=f"{samples_per_s:.2f}",
                                **({"val": f"{val_loss:.4f}"} if val_loss is not None else {}))
                if on_step is not None:
                    on_step(state.step, loss_value)
                if last or stopped:
                    break
    finally:
        bar.close()
        if log is not None:
            log.close()

    result = TrainResult(out, state.step, total_steps, state.step >= total_steps, state.best_val_loss,
                         state.best_step, trainable_params, frozen_params, accelerator.unwrap_model(model))
    if not result.finished:
        main_print(accelerator, f"stopped at step {state.step} of {total_steps}; rerun with --resume to continue")
        return result
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        best = find_checkpoint(out, "best")
        if best is not None:
            unwrapped.load_trainable_state_dict(read_trainable(best), str(best))
        write_trained_run(out, unwrapped, image, config, notes={
            "training": {**config.to_dict(), "total_steps": total_steps, "warmup_steps": warmup,
                         "schedule": f"linear warmup {warmup} steps, then {config.schedule}",
                         "best_step": state.best_step, "best_val_loss": state.best_val_loss,
                         "train_cases": len(train), "valid_cases": len(valid),
                         "num_processes": accelerator.num_processes,
                         "mixed_precision": accelerator.mixed_precision},
            "parameters": {"trainable": trainable_params, "frozen": frozen_params},
        })
        from training.domain_guard import attach_domain_guard

        guard = attach_domain_guard(out, dataset, cache, train_split=config.train_split, valid_split=config.valid_split)
        main_print(accelerator, guard.describe())
        best = "none (no validation split)" if state.best_val_loss is None else \
            f"{state.best_val_loss:.4f} at step {state.best_step}"
        main_print(accelerator, f"wrote run {out}: {state.step} steps; trainable {trainable_params:,}, frozen "
                                f"{frozen_params:,} parameters; best validation loss {best}")
    accelerator.wait_for_everyone()
    return result


def lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """LR multiplier at optimiser step `step` (0-based): linear warmup to 1 over `warmup` steps, then
    linear or cosine decay to 0 at `total`, or constant. (transformers' schedulers behave the same,
    but importing them pulls in peft and costs seconds.)"""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)

    return factor


def _every(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2)


def decoder_signature(decoder) -> str:
    """Architecture of the decoder (family, vocabulary, width, size), not its path: a checkpoint
    resumes on the same LLM moved elsewhere, never on another one."""
    cfg = decoder.config
    n = sum(p.numel() for p in decoder.parameters())
    text = f"{cfg.model_type}:{cfg.vocab_size}:{decoder.get_input_embeddings().embedding_dim}:{n}"
    return f"{text}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def per_case_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of report-token NLL, number of report tokens) per case, for a token-weighted mean."""
    prefix = model.prefix(batch["latent"], batch.get("logits"))
    inputs_embeds, mask, labels = model.build_inputs(prefix, batch["input_ids"], batch["attention_mask"])
    logits = model.decoder(inputs_embeds=inputs_embeds, attention_mask=mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


@torch.no_grad()
def validation_loss(model, loader, accelerator) -> float:
    """Token-weighted mean NLL of the report tokens over the whole loader, gathered from every process."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    total, count = 0.0, 0
    for batch in loader:
        with accelerator.autocast():
            nll, n = per_case_nll(unwrapped, batch)
        nll, n = accelerator.gather_for_metrics((nll, n))
        total += float(nll.double().sum())
        count += int(n.sum())
    unwrapped.train()
    return total / max(count, 1)


# -- the image side and the written run ------------------------------------------------------------
@dataclass
class ImageSide:
    root: Path
    config: object  # engine.rundir.ImageModelConfig (weights paths absolute)
    label_set: object  # engine.labels.LabelSet
    preprocess: object  # engine.preprocess.PreprocessConfig
    classifier: torch.nn.Module


def load_image_side(path: str | Path) -> ImageSide:
    """IMAGE (an image-model folder or a run): its configs and the classifier head, loaded strictly.
    The encoder itself is not loaded: training reads the cache, and the run references its weights."""
    from safetensors.torch import load_file

    from engine.classifier import AbnormalityHead
    from engine.rundir import load_image_model

    root, cfg = load_image_model(path)
    label_set = cfg.label_set
    head = AbnormalityHead(cfg.classifier.config)
    try:
        head.load_state_dict(load_file(cfg.classifier.weights))
    except Exception as err:  # safetensors errors for bad files, RuntimeError for key mismatches
        raise CheckpointError(f"classifier weights do not fit the image model's config ({err})",
                              cfg.classifier.weights) from None
    if head.config.n_labels != len(label_set) or len(cfg.classifier.thresholds) != len(label_set):
        raise ConfigError(f"classifier has {head.config.n_labels} outputs and {len(cfg.classifier.thresholds)} "
                          f"thresholds for label set {label_set.name!r} of {len(label_set)}", root)
    return ImageSide(root, cfg, label_set, cfg.preprocess, head.eval())


def write_trained_run(out: Path, model, image: ImageSide, config: TrainConfig, *, notes: dict):
    """The inference run: IMAGE's encoder (referenced by path) and classifier, the trained
    connector (and decoder weights when trained), the LLM referenced by path; its provenance is the
    image model's with the dataset the connector learned from and the LLM added."""
    from engine.encoders import ENCODERS
    from engine.generation import GenerationSettings
    from engine.provenance import describe_dataset, describe_decoder
    from engine.rundir import write_run
    from training.image_side import report_valid_auroc

    with torch.device("meta"):  # only its config is written; the weights file is referenced
        encoder = ENCODERS.build(image.config.encoder.name, image.config.encoder.config)
    max_new = config.max_report_tokens or GenerationSettings().max_new_tokens
    positions = getattr(model.decoder.config, "max_position_embeddings", None) or getattr(model.decoder.config, "n_positions", None)
    if positions:  # the prefix and the report must fit the decoder's positions
        max_new = min(max_new, positions - model.prefix_len)
    generation = GenerationSettings(max_new_tokens=max_new)
    return write_run(
        out, label_set=image.label_set, preprocess=image.preprocess, encoder_name=image.config.encoder.name,
        encoder=encoder, classifier=image.classifier, thresholds=image.config.classifier.thresholds,
        generator=model, decoder_path=config.llm, gguf_file=config.gguf_file, generation=generation,
        notes=notes, encoder_weights=image.config.encoder.weights, report_section=config.section,
        valid_auroc=image.config.classifier.valid_auroc or report_valid_auroc(image.root, image.label_set.names),
        provenance=image.config.provenance.merged(data=describe_dataset(config.data),
                                                  decoder=describe_decoder(config.llm, gguf_file=config.gguf_file)),
    )
