"""`rad3d train-classifier --tune-last-layer`: the paper's out-of-domain adaptation. The encoder's
last layer and a NEW head for the target label set (e.g. the inspect-like 21) are trained on the
target domain's volumes; everything else stays frozen.

"The last layer" of CT-CLIP's encoder is the last block of its temporal transformer together with
that transformer's output norm (CTCLIPImageEncoder(trainable="last_layer")): the last attention
layer before the VQ, pooling and latent projection, which have no parameters to adapt (the codebook
is kept, so the latent stays CT-CLIP's kind of latent). Because all blocks before it are frozen,
their output is a constant of each volume: it is computed once (no gradient) and the loop trains
only `last block → norm → VQ (straight-through) → pool → projection → head`, which is exact and
saves the frozen blocks' cost every step. No augmentation, for the same reason.

The head trains on the L2-normalised latent times sqrt(dim_latent) (as train-encoder's); the factor
is folded into the saved head, which then takes the latent inference gives it. The new image model
records `tuned_last_layer` (the base image model's digest and which parameters trained); its
encoder weights are a new file, so every cache and run made with it is fingerprinted apart from the
base model's.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.classifier import (
    AbnormalityHead,
    AbnormalityHeadConfig,
    choose_thresholds,
    class_weighted_bce,
    pos_weight_from_prevalence,
    threshold_rule,
)
from engine.errors import ConfigError
from engine.preprocess import apply_windows
from training.configs import ClassifierTrainConfig
from training.loop import Recipe, TensorBatches

ENCODER_FILE = "encoder.safetensors"
LAST_LAYER = "visual_transformer.enc_temporal_transformer.layers[-1] + norm_out"


class LastLayerModel(nn.Module):
    """The encoder from its last temporal block on, plus a head, on that block's inputs
    (B·h·w, t, dim) (`last_block_inputs`). The whole encoder is held; its requires_grad flags
    (trainable="last_layer") say what trains."""

    def __init__(self, encoder: nn.Module, head: AbnormalityHead):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.latent_scale = math.sqrt(encoder.cfg.dim_latent)

    def latent(self, x: torch.Tensor, grid: tuple[int, int, int, int]) -> torch.Tensor:
        vt = self.encoder.visual_transformer
        temporal = vt.enc_temporal_transformer
        b, t, h, w = grid
        x = temporal.norm_out(temporal.layers[-1](x, grid))
        tokens, _ = vt.vq(x.reshape(b, h, w, t, -1).permute(0, 3, 1, 2, 4))  # straight-through
        return F.normalize(self.encoder.to_visual_latent(self.encoder.pool(tokens)), dim=-1)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int, int]) -> torch.Tensor:
        return self.head(self.latent(x, grid) * self.latent_scale)


@torch.no_grad()
def last_block_inputs(encoder: nn.Module, videos: torch.Tensor, preprocess, *, batch: int = 4):
    """((N, h·w, t, dim) inputs of the last temporal block, grid (t, h, w)) of plain-channel
    volumes (N, 1, D, H, W), through the frozen blocks before it."""
    vt = encoder.visual_transformer
    layers = vt.enc_temporal_transformer.layers
    dtype = vt.to_patch_emb[2].weight.dtype
    out, grid = [], None
    for i in range(0, len(videos), batch):
        video = apply_windows(videos[i:i + batch], preprocess).to(dtype)
        encoder.check_input(video)
        tokens = vt.encode_spatial(vt.embed_patches(video))
        b, t, h, w, d = tokens.shape
        x = tokens.permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)  # as CTViT.encode_temporal
        for block in layers[:-1]:
            x = block(x, (b, t, h, w))
        out.append(x.reshape(b, h * w, t, d))
        grid = (t, h, w)
    return torch.cat(out), grid


class LastLayerRecipe(TensorBatches, Recipe):
    """Class-weighted BCE on batches of cached last-block inputs; validation loss on all of valid."""

    def __init__(self, x, y, valid, grid, pos_weight, config: ClassifierTrainConfig, accelerator):
        self.x, self.y, self.valid, self.grid, self.config = x, y, valid, grid, config
        self.accelerator = accelerator
        self.pos_weight = pos_weight.to(accelerator.device)

    def _logits(self, model, x: torch.Tensor) -> torch.Tensor:
        t, h, w = self.grid
        return model(x.reshape(-1, t, x.shape[-1]), (len(x), t, h, w)).float()

    def loss(self, model, batch) -> torch.Tensor:
        return class_weighted_bce(self._logits(model, batch["x"]), batch["y"], self.pos_weight)

    @torch.no_grad()
    def evaluate(self, model, epoch: int) -> float:
        core = self.accelerator.unwrap_model(model).eval()
        x, y = self.valid
        return float(class_weighted_bce(self._logits(core, x.to(self.accelerator.device)),
                                        y.to(self.accelerator.device), self.pos_weight))

    def weights(self, model) -> dict[str, torch.Tensor]:
        return {k: v for k, v in model.state_dict().items() if _tuned(model, k)}

    def load_weights(self, model, weights, source) -> None:
        model.load_state_dict(weights, strict=False)


def _tuned(model: LastLayerModel, key: str) -> bool:
    """Is state key `key` one that trains (the head, or a trainable encoder parameter)?"""
    if key.startswith("head."):
        return True
    params = dict(model.named_parameters())
    return key in params and params[key].requires_grad


def build_tunable(image_cfg, n_labels: int, config: ClassifierTrainConfig) -> LastLayerModel:
    """The base image model's encoder (weights loaded strictly) with only its last layer
    trainable, and a new head of `n_labels` outputs."""
    from engine.encoders import DEFAULT_ENCODER
    from engine.image_model import load_encoder

    if image_cfg.encoder.name != DEFAULT_ENCODER:
        raise ConfigError(f"--tune-last-layer tunes CT-CLIP's CT-ViT ({DEFAULT_ENCODER}); this image model's "
                          f"encoder is {image_cfg.encoder.name!r}")
    encoder = load_encoder(image_cfg.encoder.name, image_cfg.encoder.config, image_cfg.encoder.weights)
    encoder.set_trainable("last_layer")
    torch.manual_seed(config.seed)
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=encoder.cfg.dim_latent, hidden=config.hidden,
                                                 n_labels=n_labels, dropout=config.dropout))
    return LastLayerModel(encoder.float(), head)


def fit_last_layer(model: LastLayerModel, x, y, valid, grid, config: ClassifierTrainConfig, *, accelerator,
                   progress: bool = True) -> dict:
    """Train through training/loop.py; load the best-validation weights into `model`; returns notes."""
    from training.checkpointing import TrainState
    from training.loop import LoopSettings, TrainLoop, make_scheduler, steps_per_epoch

    pos_weight = pos_weight_from_prevalence(y.numpy())
    groups = [{"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": config.encoder_lr},
              {"params": list(model.head.parameters()), "lr": config.lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch(len(x), config.batch_size, accelerator.num_processes)
    scheduler = make_scheduler(optimizer, warmup=0, total=total, schedule="constant")
    recipe = LastLayerRecipe(x, y, valid, grid, pos_weight, config, accelerator)
    loop = TrainLoop(accelerator, model, optimizer, scheduler, recipe, LoopSettings(
        total, patience=config.patience, progress=progress, desc="tune-last-layer"), state=TrainState())
    state = loop.run()
    best = loop.best_weights()
    if best:
        model.load_state_dict({k: v.detach().cpu() for k, v in best.items()}, strict=False)
    model.eval()
    best_epoch = next((r["epoch"] for r in loop.rows if r["step"] == state.best_step), 0)
    return {"best_epoch": best_epoch, "best_valid_loss": state.best_val_loss,
            "pos_weight": [round(float(w), 4) for w in pos_weight]}


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


@torch.no_grad()
def _probabilities(model: LastLayerModel, x: torch.Tensor, grid, batch: int = 16) -> np.ndarray:
    t, h, w = grid
    out = [torch.sigmoid(model(x[i:i + batch].reshape(-1, t, x.shape[-1]), (len(x[i:i + batch]), t, h, w)))
           for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


@dataclass
class LastLayerResult:
    out: Path
    notes: dict
    thresholds: np.ndarray
    report: object  # pandas DataFrame
    probabilities: dict[str, np.ndarray]  # valid and test, in split order


def tune_last_layer(data_dir, out: str | Path, *, image_model: str | Path, label_set=None,
                    config: ClassifierTrainConfig, workers: int = 2, progress: bool = True) -> LastLayerResult:
    """Fine-tune the last layer of `image_model`'s encoder and a new head on `data_dir` (its label
    set, or `label_set`); write a new image model to `out` (see the module doc)."""
    from engine.data import resolve
    from engine.rundir import IMAGE_MODEL_FILE, load_image_model
    from training.accelerate_utils import make_accelerator
    from training.image_model_common import labelled_split
    from training.volume_tensors import load_volume_tensors

    root, base = load_image_model(image_model)
    dataset = resolve(data_dir, label_set=label_set, section=None)
    model = build_tunable(base, len(dataset.label_set), config)  # a wrong encoder fails before volumes are read
    splits = {s: labelled_split(dataset, s) for s in ("train", "valid", "test")}
    x, grid = {}, None
    for s, sp in splits.items():
        videos = load_volume_tensors(dataset, sp.volume_names, base.preprocess, workers=workers, progress=progress)
        x[s], grid = last_block_inputs(model.encoder, videos, base.preprocess)
    y = {s: torch.from_numpy(sp.labels) for s, sp in splits.items()}
    accelerator = make_accelerator()
    torch.manual_seed(config.seed)
    notes = fit_last_layer(model, x["train"], y["train"], (x["valid"], y["valid"]), grid, config,
                           accelerator=accelerator, progress=progress)
    base_digest = file_digest(root / IMAGE_MODEL_FILE) if (root / IMAGE_MODEL_FILE).is_file() else None
    tuned = {"layer": LAST_LAYER, "base_image_model": str(root), "base_image_model_digest": base_digest,
             "base_encoder_weights": file_digest(Path(base.encoder.weights)),
             "trainable_encoder_parameters": sum(p.numel() for p in model.encoder.parameters() if p.requires_grad)}
    notes = {"trained_by": "rad3d train-classifier --tune-last-layer", "data": dataset.source.absolute().to_dict(),
             "train_config": asdict(config), **notes}
    result = _write(Path(out), model, base, dataset, splits, x, grid, config, notes, tuned, accelerator)
    accelerator.wait_for_everyone()
    return result


def _write(out: Path, model, base, dataset, splits, x, grid, config, notes, tuned, accelerator) -> LastLayerResult:
    from engine.encoders.checkpoint import save_encoder_weights
    from engine.rundir import EncoderSpec
    from training.image_model_common import (
        fold_input_affine,
        macro_auroc,
        per_label_auroc,
        report_table,
        write_image_model,
        write_report,
    )

    probs = {s: _probabilities(model, x[s], grid) for s in ("valid", "test")}
    thresholds = choose_thresholds(probs["valid"], splits["valid"].labels, config.threshold_method,
                                   config.min_specificity)
    table = report_table(probs, {s: splits[s].labels for s in probs}, thresholds, dataset.label_set)
    notes = {**notes, "macro_auroc": {s: macro_auroc(table, s) for s in probs}}
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        head = AbnormalityHead(model.head.config)
        head.load_state_dict(model.head.state_dict())
        dim = model.encoder.cfg.dim_latent
        fold_input_affine(head, torch.zeros(dim), torch.full((dim,), model.latent_scale))
        save_encoder_weights(model.encoder, out / ENCODER_FILE)
        spec = EncoderSpec(name=base.encoder.name, config=base.encoder.config, weights=ENCODER_FILE)
        write_image_model(out, label_set=dataset.label_set, preprocess=base.preprocess, encoder_spec=spec,
                          head=head.eval(), thresholds=thresholds, notes=notes, tuned_last_layer=tuned,
                          valid_auroc=per_label_auroc(table, "valid", dataset.label_set.names))
        write_report(out, table, f"Last-layer adaptation ({dataset.label_set.name})",
                     rule=threshold_rule(config.threshold_method, config.min_specificity))
    return LastLayerResult(out, {**notes, "tuned_last_layer": tuned}, thresholds, table, probs)
