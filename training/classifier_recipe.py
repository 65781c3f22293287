"""`rad3d train-classifier`: the 18-label AbnormalityHead on cached latents of a frozen encoder.

Class-weighted BCE with positive weights from the train split's prevalence; the epoch with the
lowest validation loss is kept (early stop after `patience` epochs without improvement); per-class
thresholds are chosen on valid; the report covers valid and test. The head trains on standardised
latents (train mean/std) and is saved with that affine folded into its first layer, so the saved
head takes the raw cached latent, as inference gives it. Afterwards every cached case gets its
logits (`EmbeddingCache.set_logits`), which V-3 reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.cache import EmbeddingCache
from engine.classifier import (
    AbnormalityHead,
    AbnormalityHeadConfig,
    choose_thresholds,
    class_weighted_bce,
    pos_weight_from_prevalence,
    threshold_rule,
)
from engine.errors import ConfigError
from engine.rundir import EncoderSpec
from training.configs import ClassifierTrainConfig  # defined without torch, for the CLI
from training.image_model_common import (
    CLASSIFIER_FILE,
    LabelledSplit,
    check_label_sets_agree,
    fold_input_affine,
    labelled_split,
    macro_auroc,
    per_label_auroc,
    report_table,
    weights_reference,
    write_image_model,
    write_report,
)
from training.loop import Recipe, TensorBatches


@dataclass
class HeadFit:
    head: AbnormalityHead  # takes raw latents (standardisation folded in)
    pos_weight: torch.Tensor
    best_epoch: int
    best_valid_loss: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, valid_loss, lr


def fit_abnormality_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    config: ClassifierTrainConfig | None = None,  # None: the defaults
    *,
    accelerator=None,
    pos_weight: torch.Tensor | None = None,
    progress: bool = True,
) -> HeadFit:
    """Train a head on (N, d) latents and (N, n_labels) 0/1 labels; returns the best-validation head.
    pos_weight defaults to the training prevalence (negatives / positives per label). The loop is
    training/loop.py's (constant LR; no run folder: the best weights are kept in memory)."""
    from training.accelerate_utils import make_accelerator
    from training.checkpointing import TrainState
    from training.loop import LoopSettings, TrainLoop, make_scheduler, steps_per_epoch

    config = ClassifierTrainConfig() if config is None else config
    accelerator = accelerator or make_accelerator()
    torch.manual_seed(config.seed)
    train_x, train_y = train_x.float(), train_y.float()
    shift = train_x.mean(0)
    scale = 1.0 / train_x.std(0).clamp_min(1e-6)
    pos_weight = pos_weight_from_prevalence(train_y.numpy()) if pos_weight is None else pos_weight.float()

    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=train_x.shape[1], hidden=config.hidden,
                                                 n_labels=train_y.shape[1], dropout=config.dropout))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch(len(train_x), config.batch_size, accelerator.num_processes)
    scheduler = make_scheduler(optimizer, warmup=0, total=total, schedule="constant")
    recipe = HeadRecipe((train_x - shift) * scale, train_y, ((valid_x.float() - shift) * scale, valid_y.float()),
                        pos_weight, config, accelerator)
    loop = TrainLoop(accelerator, head, optimizer, scheduler, recipe, LoopSettings(
        total, patience=config.patience, progress=progress, desc="train-classifier"), state=TrainState())
    threads = torch.get_num_threads()
    if accelerator.device.type == "cpu":
        torch.set_num_threads(1)  # a head this small is overhead-bound: more threads only wait on each other
    try:
        state = loop.run()
    finally:
        torch.set_num_threads(threads)

    final = AbnormalityHead(head.config)
    final.load_state_dict({k: v.detach().cpu().float() for k, v in (loop.best_weights() or head.state_dict()).items()})
    fold_input_affine(final, shift, scale)
    final.eval()
    history = _epoch_history(loop.rows)
    best_epoch = next((r["epoch"] for r in loop.rows if r["step"] == state.best_step), 0)
    return HeadFit(final, pos_weight, best_epoch, state.best_val_loss, len(history), history)


class HeadRecipe(TensorBatches, Recipe):
    """The classifier's part of the loop: class-weighted BCE on standardised latents; validation
    on the whole valid split after every epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, valid: tuple[torch.Tensor, torch.Tensor],
                 pos_weight: torch.Tensor, config: ClassifierTrainConfig, accelerator):
        self.x, self.y, self.config, self.accelerator = x, y, config, accelerator
        device = accelerator.device
        self.valid = (valid[0].to(device), valid[1].to(device))
        self.pos_weight = pos_weight.to(device)

    def loss(self, model, batch) -> torch.Tensor:
        return class_weighted_bce(model(batch["x"]).float(), batch["y"], self.pos_weight)

    @torch.no_grad()
    def evaluate(self, model, epoch: int) -> float:
        head = self.accelerator.unwrap_model(model).eval()
        return float(class_weighted_bce(head(self.valid[0]).float(), self.valid[1], self.pos_weight))


def _epoch_history(rows: list[dict]) -> list[dict]:
    """Per epoch: epoch, train_loss (sample-weighted mean over its steps), valid_loss, lr."""
    history: dict[int, dict] = {}
    for r in rows:
        h = history.setdefault(r["epoch"], {"epoch": r["epoch"], "loss_sum": 0.0, "samples": 0, "valid_loss": None,
                                            "lr": r["lr"]})
        h["loss_sum"] += r["loss"] * r["samples"]
        h["samples"] += r["samples"]
        if r["val_loss"] is not None:
            h["valid_loss"] = r["val_loss"]
    return [{"epoch": h["epoch"], "train_loss": h["loss_sum"] / h["samples"], "valid_loss": h["valid_loss"],
             "lr": h["lr"]} for h in history.values()]


@torch.no_grad()
def head_logits(head: AbnormalityHead, latents: np.ndarray | torch.Tensor, batch: int = 4096) -> np.ndarray:
    x = torch.as_tensor(np.asarray(latents), dtype=torch.float32)
    head = head.eval().float().cpu()
    if not len(x):
        return np.zeros((0, head.config.n_labels), np.float32)
    return torch.cat([head(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class EncoderSource:
    """The encoder whose latents the cache holds: name, config dict, weights file, preprocessing."""

    name: str
    config: dict
    weights: Path
    preprocess: object  # PreprocessConfig


def encoder_source(*, image_model: str | Path | None = None, encoder_weights: str | Path | None = None,
                   encoder_config: str | Path | None = None, preprocess: str | Path | None = None):
    """(EncoderSource, LabelSet or None) from an image model folder, or from weights + config
    (+ preprocessing JSON; CT-CLIP's grid by default), exactly as `rad3d embed` was given them."""
    from engine.encoders import DEFAULT_ENCODER, load_encoder_config
    from engine.model_configs import read_preprocess_config
    from engine.rundir import load_image_model

    if image_model is not None:
        if encoder_weights is not None:
            raise ConfigError("give --image-model or --encoder, not both")
        root, cfg = load_image_model(image_model)
        return EncoderSource(cfg.encoder.name, cfg.encoder.config, Path(cfg.encoder.weights),
                             cfg.preprocess), cfg.label_set
    if encoder_weights is None:
        raise ConfigError("give --image-model IMAGE or --encoder WEIGHTS (the encoder the cache was made with)")
    weights = Path(encoder_weights)
    if not weights.is_file():
        raise ConfigError("encoder weights file not found", weights)
    pp = read_preprocess_config(preprocess)
    enc_cfg = load_encoder_config(encoder_config or None).to_dict()  # None: CT-CLIP's public config
    return EncoderSource(DEFAULT_ENCODER, enc_cfg, weights, pp), None


def check_cache_made_by(cache: EmbeddingCache, source: EncoderSource) -> None:
    """Refuse a cache whose latents another encoder or preprocessing made: a head trained on them
    would not see at inference what it saw in training. (Logits of another label set are fine:
    this command replaces them.)"""
    from engine.embedding import encoder_identity

    problems = []
    ours = encoder_identity(source.name, source.config, source.weights)
    if cache.identity.encoder != ours:
        problems.append(f"encoder: cache has {cache.identity.encoder!r}, given encoder is {ours!r}")
    if cache.identity.preprocess != source.preprocess.fingerprint():
        problems.append(f"preprocessing: cache has {cache.identity.preprocess!r}, given {source.preprocess.fingerprint()!r}")
    if problems:
        raise ConfigError("embedding cache was not made with the given encoder: " + "; ".join(problems), cache.root)


@dataclass
class ClassifierTrainResult:
    out: Path
    fit: HeadFit
    thresholds: np.ndarray
    report: object  # pandas DataFrame (split, name, auroc, f1, ...)
    logits_written: int


def train_classifier(
    cache_dir: str | Path,
    data_dir,  # a DataSource or a dataset folder
    out: str | Path,
    *,
    image_model: str | Path | None = None,
    encoder_weights: str | Path | None = None,
    encoder_config: str | Path | None = None,
    preprocess: str | Path | None = None,
    label_set=None,
    config: ClassifierTrainConfig | None = None,  # None: the defaults
    progress: bool = True,
) -> ClassifierTrainResult:
    from engine.data import resolve
    from engine.embedding import file_fingerprint
    from training.accelerate_utils import make_accelerator

    config = ClassifierTrainConfig() if config is None else config
    out = Path(out)
    source, model_labels = encoder_source(image_model=image_model, encoder_weights=encoder_weights,
                                          encoder_config=encoder_config, preprocess=preprocess)
    cache = EmbeddingCache.open(cache_dir)
    check_cache_made_by(cache, source)
    dataset = resolve(data_dir, label_set=label_set, section=None)  # label columns checked here
    if model_labels is not None:
        check_label_sets_agree(dataset.label_set, model_labels, "the image model", image_model)
    splits: dict[str, LabelledSplit] = {s: labelled_split(dataset, s) for s in ("train", "valid", "test")}
    cache.require([n for s in splits.values() for n in s.volume_names])  # names every missing case

    x = {s: torch.from_numpy(cache.stack(sp.volume_names)[0]) for s, sp in splits.items()}
    y = {s: torch.from_numpy(sp.labels) for s, sp in splits.items()}
    accelerator = make_accelerator()
    fit = fit_abnormality_head(x["train"], y["train"], x["valid"], y["valid"], config, accelerator=accelerator,
                               progress=progress)

    probs = {s: _sigmoid(head_logits(fit.head, x[s])) for s in ("valid", "test")}
    thresholds = choose_thresholds(probs["valid"], splits["valid"].labels, config.threshold_method,
                                   config.min_specificity)
    table = report_table(probs, {s: splits[s].labels for s in probs}, thresholds, dataset.label_set)

    notes = {
        "trained_by": "rad3d train-classifier",
        "cache": str(Path(cache_dir).resolve()),
        "data": dataset.source.absolute().to_dict(),
        "train_config": asdict(config),
        "best_epoch": fit.best_epoch,
        "best_valid_loss": fit.best_valid_loss,
        "pos_weight": [round(float(w), 4) for w in fit.pos_weight],
        "macro_auroc": {s: macro_auroc(table, s) for s in probs},
    }
    names = cache.names()
    if accelerator.is_main_process:  # on several processes, one writes
        spec = EncoderSpec(name=source.name, config=source.config, weights=weights_reference(source.weights, out))
        write_image_model(out, label_set=dataset.label_set, preprocess=source.preprocess, encoder_spec=spec,
                          head=fit.head, thresholds=thresholds, notes=notes,
                          valid_auroc=per_label_auroc(table, "valid", dataset.label_set.names))
        write_report(out, table, f"Abnormality classifier on cached latents ({dataset.label_set.name})",
                     rule=threshold_rule(config.threshold_method, config.min_specificity))
        _write_history(out / "classifier_metrics.csv", fit.history)
        logits = head_logits(fit.head, cache.stack(names)[0])
        cache.set_logits(dict(zip(names, logits)), label_set=dataset.label_set.name,
                         classifier=f"{out.resolve() / CLASSIFIER_FILE}:{file_fingerprint(out / CLASSIFIER_FILE)}")
    accelerator.wait_for_everyone()
    return ClassifierTrainResult(out, fit, thresholds, table, len(names))


def _write_history(path: Path, history: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(path, index=False)
