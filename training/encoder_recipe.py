"""`rad3d train-encoder`: a small CT-ViT and its AbnormalityHead trained end to end on phantoms,
for the embedded demo (a real CT-CLIP checkpoint is not shippable and cannot be trained here).

The encoder is CT-CLIP's architecture with CT-CLIP's key names (engine.encoders, config
`demo-small`), and what is saved runs through CT-CLIP's unchanged inference path, VQ lookup
included. Training through that lookup from the start would be poor: with a random codebook the
quantised tokens carry little of what the encoder computes, and the straight-through gradient
describes the identity, not the lookup. So training has three phases:

1. `epochs` epochs end to end WITHOUT the VQ (pooled pre-quantisation tokens → latent → head);
2. the codebook is fitted to the trained encoder: spherical k-means (the VQ picks rows by cosine)
   on pre-VQ tokens of the training volumes; each row is the mean of its tokens, raw magnitude
   kept, since the VQ returns the stored row as it is;
3. `vq_epochs` epochs through the VQ with the codebook fixed (straight-through, as CT-CLIP
   trained), so encoder and head adapt to the quantised tokens. The epoch of this phase with the
   lowest validation loss (computed on the inference path) is kept.

The latent projection is trained shared over token positions and written into CT-CLIP's
position-wise `to_visual_latent` at the end (exact; see EncoderWithHead). Every other parameter
the latent path uses is trained (the engine's encoder offers only "none" and
"last_layer"; this recipe sets requires_grad itself). Modules CT-CLIP's checkpoint carries but the
latent never uses keep their random initialisation and are saved so the file loads strictly.

On phantoms (DIR/phantom_truth.json) an auxiliary loss supervises every token: a linear token
head on the pre-VQ tokens predicts which findings touch the token's patch (training/
token_targets.py), class-weighted BCE, added with weight `token_loss_weight`. One 18-label vector
per volume let the encoder memorise a few hundred volumes (valid macro AUROC 0.52 on 278 of
them); with the token loss it rose to 0.60 (0.63 on 834): it no longer memorises but underfits,
since a 64-wide linear embedding of 1152-voxel patches cannot tell e.g. metal from bone cortex by
intensity. The token head is training-only: it is not saved in the image model, whose encoder
stays CT-CLIP's.

The head trains on the L2-normalised latent times sqrt(dim_latent) (unit-scale entries, which the
optimiser fits quickly); the factor is folded into the head when it is saved.

Volumes are preprocessed once (training/volume_tensors.py). The loop is training/loop.py's:
checkpoints at the end of every epoch; `resume=True` continues from the last one with the same
batches, augmentations and learning rates an uninterrupted run would have used. On several
processes (`accelerate launch`, `torchrun`) `batch_size` is per process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from engine.encoders import DEFAULT_ENCODER, CTCLIPImageEncoder
from engine.errors import CheckpointError, ConfigError
from engine.preprocess import PreprocessConfig, apply_windows
from training.configs import EncoderTrainConfig
from training.loop import Recipe

ENCODER_FILE = "encoder.safetensors"


class EncoderWithHead(nn.Module):
    """Encoder + head as one trainable module. `quantize=False` skips the VQ (phase 1).

    With `tied_projection` the latent projection is trained as one (dim_latent x dim) matrix A
    applied to the mean of all tokens, instead of CT-CLIP's (dim_latent x h*w*dim) matrix on the
    flattened (h, w, dim) grid: a position-specific projection memorises a few hundred training
    volumes instead of learning findings that may lie anywhere. `export_projection` writes A into
    CT-CLIP's to_visual_latent as W[:, (i*w + j)*dim + k] = A[:, k] / (h*w), which computes exactly
    A · mean over (h, w) of the t-mean tokens, so the saved encoder runs CT-CLIP's unchanged path.
    After export (or without tying), `quantize=True` in eval mode is exactly head(encoder(video)).

    Inputs are the one plain channel; `preprocess` (windows, reference channel) makes the encoder's
    channels from it inside the forward, after training's augmentation. With `standardize_latent`
    the head sees the latent standardised by a BatchNorm without affine: a finding in a few of 384
    tokens moves the mean-pooled, unit-norm latent by a tiny amount next to what every volume shares,
    and per-dimension standardisation lifts those small differences to unit scale (as
    `rad3d train-classifier` standardises cached latents). In eval mode it is a fixed affine, which
    `head_input_affine` gives for folding into the saved head."""

    def __init__(self, encoder: CTCLIPImageEncoder, head: AbnormalityHead, *, tied_projection: bool = True,
                 token_head: bool = False, preprocess: PreprocessConfig | None = None,
                 standardize_latent: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.latent_scale = math.sqrt(encoder.cfg.dim_latent)
        cfg = encoder.cfg
        self.preprocess = preprocess
        self.latent_norm = (nn.BatchNorm1d(cfg.dim_latent, affine=False, momentum=0.05)
                            if standardize_latent else None)
        self.tied_projection = tied_projection
        if tied_projection:
            self.shared_projection = nn.Linear(cfg.dim, cfg.dim_latent, bias=False)
        # Training-only: per-token finding logits for the auxiliary loss; never exported.
        self.token_head = nn.Linear(cfg.dim, head.config.n_labels) if token_head else None

    def latent(self, video: torch.Tensor, quantize: bool) -> torch.Tensor:
        return self._latent_and_tokens(video, quantize)[0]

    def encoder_input(self, video: torch.Tensor) -> torch.Tensor:
        """Plain channel (B, 1, D, H, W) → the encoder's channels."""
        return video if self.preprocess is None else apply_windows(video, self.preprocess)

    def _latent_and_tokens(self, video: torch.Tensor, quantize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        tokens = pre_vq = enc.visual_transformer.encode(self.encoder_input(video))
        if quantize:
            tokens, _ = enc.visual_transformer.vq(tokens)  # straight-through when grad is on
        if self.tied_projection:
            latent = self.shared_projection(tokens.mean(dim=(1, 2, 3)))
        else:
            latent = enc.to_visual_latent(enc.pool(tokens))
        return F.normalize(latent, dim=-1), pre_vq

    def forward(self, video: torch.Tensor, quantize: bool = True, with_tokens: bool = False):
        """Volume logits; with `with_tokens` also the token head's logits (B, t, h, w, n_labels) on
        the pre-VQ tokens (through forward, so a distributed wrapper sees the call)."""
        latent, tokens = self._latent_and_tokens(video, quantize)
        z = latent * self.latent_scale
        logits = self.head(self.latent_norm(z) if self.latent_norm is not None else z)
        return (logits, self.token_head(tokens)) if with_tokens else logits

    def head_input_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) with head input = (latent - shift) * scale in eval mode, for
        `fold_input_affine`: the latent scale and, if standardising, the BatchNorm's running stats."""
        s = self.latent_scale
        if self.latent_norm is None:
            return torch.zeros(self.encoder.cfg.dim_latent), torch.full((self.encoder.cfg.dim_latent,), s)
        bn = self.latent_norm
        std = torch.sqrt(bn.running_var.detach().cpu() + bn.eps)
        return bn.running_mean.detach().cpu() / s, s / std

    @torch.no_grad()
    def export_projection(self) -> None:
        """Write the shared projection into the encoder's to_visual_latent (see class doc)."""
        if not self.tied_projection:
            return
        positions = self.encoder.cfg.grid_size ** 2
        a = self.shared_projection.weight / positions  # (dim_latent, dim)
        self.encoder.to_visual_latent.weight.copy_(a.repeat(1, positions))
        self.tied_projection = False
        del self.shared_projection


def unused_by_latent(name: str) -> bool:
    """Parameters a CT-CLIP checkpoint holds that the latent path never reads."""
    return (
        name.startswith(("visual_transformer.to_patch_emb_first_frame.", "visual_transformer.to_pixels",
                         "to_visual_latent_extra."))
        or ".context_norm." in name
        or name.endswith(".null_kv")
    )


def _unused_here(model: EncoderWithHead, name: str) -> bool:
    # With a tied projection the grid projection is written at export, not trained.
    return unused_by_latent(name) or (model.tied_projection and name == "to_visual_latent.weight")


def make_trainable(model: EncoderWithHead) -> list[nn.Parameter]:
    """requires_grad on every parameter the forward uses; the list the optimiser gets."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not _unused_here(model, name.removeprefix("encoder.")))
        if p.requires_grad:
            params.append(p)
    return params


def augment(videos: torch.Tensor, indices: list[int], *, seed: int, epoch: int,
            shift: tuple[int, int, int], jitter: float) -> torch.Tensor:
    """Small random shifts (empty space filled with air, -1) and intensity gain/offset. The draws
    depend only on (seed, epoch, case), so a resumed run augments exactly as the first would.
    No flips: a mirrored chest puts the heart on the wrong side."""
    out = torch.empty_like(videos)
    for k, (video, case) in enumerate(zip(videos, indices)):
        rng = np.random.default_rng([seed, epoch, int(case)])
        moves = [int(rng.integers(-s, s + 1)) if s else 0 for s in shift]
        gain, offset = 1.0 + jitter * rng.standard_normal(), jitter * rng.standard_normal()
        out[k] = _shift_fill(video, moves, -1.0) * gain + offset
    return out.clamp_(-1.0, 1.0)


def _shift_fill(video: torch.Tensor, moves: list[int], fill: float) -> torch.Tensor:
    """Shift a (C, D, H, W) tensor by `moves` voxels along D, H, W; vacated voxels get `fill`."""
    out = torch.full_like(video, fill)
    src, dst = [slice(None)], [slice(None)]
    for m, n in zip(moves, video.shape[1:]):
        src.append(slice(max(-m, 0), n - max(m, 0)))
        dst.append(slice(max(m, 0), n - max(-m, 0)))
    out[tuple(dst)] = video[tuple(src)]
    return out


@torch.no_grad()
def pre_vq_tokens(encoder: CTCLIPImageEncoder, videos: torch.Tensor, *, batch: int, device, limit: int,
                  seed: int, to_input: Callable[[torch.Tensor], torch.Tensor] = lambda v: v) -> torch.Tensor:
    """Up to `limit` pre-quantisation tokens (n, dim) of `videos` (made encoder input by
    `to_input`), an even sample over volumes."""
    gen = torch.Generator().manual_seed(seed)
    per_volume = max(1, limit // len(videos))
    chunks = []
    for i in range(0, len(videos), batch):
        tokens = encoder.visual_transformer.encode(to_input(videos[i:i + batch]).to(device)).float().cpu()
        for t in tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]):
            pick = torch.randperm(len(t), generator=gen)[:per_volume]
            chunks.append(t[pick])
    return torch.cat(chunks)


@torch.no_grad()
def fit_codebook(encoder: CTCLIPImageEncoder, tokens: torch.Tensor, *, iters: int, seed: int) -> dict:
    """Spherical k-means of `tokens` into the encoder's VQ codebook (assignment by cosine, as the
    VQ looks up; each row the raw mean of its tokens, as the VQ returns rows unnormalised).
    Empty clusters are re-seeded from the tokens worst served. Returns fit statistics."""
    codebook = encoder.visual_transformer.vq._codebook
    k = codebook.embed.shape[1]
    gen = torch.Generator().manual_seed(seed)
    tokens = tokens.float()
    unit = F.normalize(tokens, dim=-1)
    if len(tokens) < k:
        raise ConfigError(f"{len(tokens)} tokens are too few to fit a codebook of {k} rows; "
                          "use more training volumes or a smaller codebook_size")
    centres = tokens[torch.randperm(len(tokens), generator=gen)[:k]].clone()
    for _ in range(iters):
        sim = unit @ F.normalize(centres, dim=-1).t()
        best, assign = sim.max(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, tokens)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        empty = int((~filled).sum())
        if empty:  # the tokens farthest from their centre start the empty clusters
            centres[~filled] = tokens[best.argsort()[:empty]]
    sim = unit @ F.normalize(centres, dim=-1).t()
    best, assign = sim.max(dim=1)
    counts = torch.bincount(assign, minlength=k)
    codebook.embed.copy_(centres[None].to(codebook.embed))
    codebook.cluster_size.copy_(counts[None].to(codebook.cluster_size))
    codebook.initted.fill_(1.0)
    return {"tokens": len(tokens), "rows_used": int((counts > 0).sum()), "mean_cosine": float(best.mean())}


@torch.no_grad()
def predict_logits(model: EncoderWithHead, videos: torch.Tensor, *, quantize: bool, batch: int, device,
                   autocast=None) -> torch.Tensor:
    model.eval()
    outs = []
    for i in range(0, len(videos), batch):
        x = videos[i:i + batch].to(device)
        if autocast is not None:
            with autocast():
                outs.append(model(x, quantize).float().cpu())
        else:
            outs.append(model(x, quantize).float().cpu())
    return torch.cat(outs)


def _macro_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(labels[:, j], probs[:, j]) for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)]
    return float(np.mean(aucs)) if aucs else float("nan")


def token_positive_weight(targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-label positive weight of the token loss: (1 - p) / p over all training tokens, capped,
    since a finding touches only a few tokens of a volume (a nodule 1-8 of 384)."""
    p = targets.reshape(-1, targets.shape[-1]).float().mean(0)
    return ((1 - p) / p.clamp_min(1e-6)).clamp(1.0, cap)


@dataclass
class EncoderTrainResult:
    out: Path
    steps: int
    report: object  # pandas DataFrame: split, name, auroc, f1, ...
    notes: dict


def train_encoder(
    data_dir,  # a DataSource or a dataset folder
    out: str | Path,
    config: EncoderTrainConfig | None = None,  # None: the defaults
    *,
    resume: bool = False,
    workers: int = 2,
    tensor_cache: str | Path | None = None,
    cache_out: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
    threads: int | None = 1,
) -> EncoderTrainResult:
    """Train, then write the image model folder OUT (see training/image_model_common.py). `cache_out`:
    also fill an embedding cache with every case's latent and logits (what `rad3d embed` and
    `train-classifier` would write), from the tensors already in memory. `on_step(step)` is
    called after every optimiser step. `threads`: torch CPU threads while training (None: leave
    as is). One by default: this model's ops are small, and with two threads on two shared cores a
    step ran 5-100x slower than with one (threads wait on each other whenever another process runs)."""
    config = EncoderTrainConfig() if config is None else config
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train_encoder(data_dir, out, config, resume=resume, workers=workers, tensor_cache=tensor_cache,
                              cache_out=cache_out, progress=progress, on_step=on_step)
    finally:
        torch.set_num_threads(previous)


def _train_encoder(data_dir, out, config: EncoderTrainConfig, *, resume, workers, tensor_cache, cache_out, progress,
                   on_step) -> EncoderTrainResult:
    from engine.encoders import DEFAULT_ENCODER, ENCODERS
    from training.accelerate_utils import make_accelerator
    from training.loop import (
        LoopSettings,
        TrainLoop,
        checkpoint_to_resume,
        make_scheduler,
        resume_state,
        steps_per_epoch,
    )

    out = Path(out)
    started = time.perf_counter()
    enc_cfg, pp = _checked_grid(config)
    checkpoint = checkpoint_to_resume(out, resume)
    accelerator = make_accelerator()
    state = resume_state(checkpoint, {**_jsonable(config.identity()), "num_processes": accelerator.num_processes})
    data = _encoder_data(data_dir, config, enc_cfg, pp, workers=workers, tensor_cache=tensor_cache, progress=progress)

    torch.manual_seed(config.seed)
    encoder = ENCODERS.build(DEFAULT_ENCODER, enc_cfg)
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=enc_cfg.dim_latent, hidden=config.hidden,
                                                 n_labels=len(data.dataset.label_set)))
    model = EncoderWithHead(encoder, head, tied_projection=config.tied_projection,
                            token_head=data.token_targets is not None, preprocess=pp,
                            standardize_latent=config.standardize_latent)
    optimizer = torch.optim.AdamW(make_trainable(model), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = (config.epochs + config.vq_epochs) * steps_per_epoch(
        len(data.splits["train"]), config.batch_size, accelerator.num_processes)
    # Cosine decay to 5% of the peak: the VQ phase at the end still learns.
    scheduler = make_scheduler(optimizer, warmup=min(config.warmup_steps, total_steps), total=total_steps,
                               schedule="cosine", floor=0.05)
    recipe = EncoderRecipe(config, data, accelerator)
    settings = LoopSettings(total_steps, max_grad_norm=config.grad_clip, progress=progress, desc="train-encoder")
    loop = TrainLoop(accelerator, model, optimizer, scheduler, recipe, settings, state=state, run=out,
                     checkpoint=checkpoint)
    loop.run(None if on_step is None else lambda step, loss: on_step(step))
    train_seconds = time.perf_counter() - started

    core: EncoderWithHead = loop.unwrapped
    codebook_stats = recipe.codebook_stats
    if config.vq_epochs == 0:  # no fine-tune through the VQ: fit the codebook to the final encoder
        codebook_stats = _fit_codebook(core, data.videos["train"], config, accelerator.device)
    else:
        best = loop.best_weights()
        if best is None:
            raise CheckpointError("no best checkpoint was written", out / "checkpoints")
        recipe.load_weights(core, best, out / "checkpoints" / "best")
    core.export_projection()
    state.finished = True
    result = EncoderTrainResult(out, state.step, None, {})
    if accelerator.is_main_process:
        result = _write_outputs(out, core, data.dataset, data.splits, data.videos, data.labels, pp, config,
                                accelerator.device, max(config.batch_size, 16), state=state,
                                codebook_stats=codebook_stats, train_seconds=train_seconds,
                                pos_weight=data.pos_weight, cache_out=cache_out)
    accelerator.wait_for_everyone()
    return result


def _checked_grid(config: EncoderTrainConfig):
    """(encoder config, PreprocessConfig): the preprocessing grid and channels must fit the encoder."""
    from engine.encoders import load_encoder_config

    enc_cfg = load_encoder_config(config.encoder_config)
    pp = config.preprocess
    tx, ty, tz = pp.shape_xyz
    if tx != enc_cfg.image_size or ty != enc_cfg.image_size or (enc_cfg.num_slices not in (None, tz)):
        raise ConfigError(f"preprocessing grid {pp.shape_xyz} (x, y, z) does not fit encoder config "
                          f"{config.encoder_config!r} (image_size {enc_cfg.image_size}, num_slices {enc_cfg.num_slices})")
    if pp.channels != enc_cfg.channels:
        raise ConfigError(f"preprocessing gives {pp.channels} channel(s) ({len(pp.windows)} HU windows"
                          f"{' + the reference channel' if pp.reference_channel else ''}) but encoder "
                          f"config {config.encoder_config!r} takes {enc_cfg.channels}")
    return enc_cfg, pp


@dataclass
class EncoderData:
    dataset: object  # engine.data.CTRateDataset
    splits: dict  # split -> training.image_model_common.LabelledSplit
    videos: dict[str, torch.Tensor]  # split -> (N, 1, D, H, W) preprocessed volumes
    labels: dict[str, torch.Tensor]
    pos_weight: torch.Tensor
    token_targets: torch.Tensor | None  # train split's per-token finding targets (phantom truth)
    token_pos_weight: torch.Tensor | None


def _encoder_data(data_dir, config: EncoderTrainConfig, enc_cfg, pp, *, workers, tensor_cache, progress) -> EncoderData:
    """Every split's preprocessed volumes and labels (and the token targets), in memory."""
    from engine.data import resolve
    from training.image_model_common import labelled_split
    from training.token_targets import dataset_token_targets
    from training.volume_tensors import load_volume_tensors

    dataset = resolve(data_dir, section=None)  # the image model reads no report text
    splits = {s: labelled_split(dataset, s) for s in ("train", "valid", "test")}
    token_targets = token_pos_weight = None
    if config.token_loss_weight > 0:  # from the phantom truth alone: a dataset without it is refused first
        token_targets = torch.from_numpy(dataset_token_targets(
            dataset.root, splits["train"].volume_names, dataset.label_set.names, pp, enc_cfg.patch_size,
            enc_cfg.temporal_patch_size))
        token_pos_weight = token_positive_weight(token_targets, config.token_pos_weight_max)
    names = [n for s in splits.values() for n in s.volume_names]
    volumes = load_volume_tensors(dataset, names, pp, workers=workers, cache_dir=tensor_cache, progress=progress)
    bounds = np.cumsum([0] + [len(s) for s in splits.values()])
    videos = {s: volumes[bounds[i]:bounds[i + 1]] for i, s in enumerate(splits)}
    labels = {s: torch.from_numpy(sp.labels) for s, sp in splits.items()}
    return EncoderData(dataset, splits, videos, labels, pos_weight_from_prevalence(splits["train"].labels),
                       token_targets, token_pos_weight)


class EncoderRecipe(Recipe):
    """The encoder's part of the loop: augmented batches, volume (+ token) BCE, the VQ phase from
    epoch `config.epochs` on (its codebook fitted first), validation on the inference path, and
    only VQ epochs eligible as best."""

    def __init__(self, config: EncoderTrainConfig, data: EncoderData, accelerator):
        self.config, self.data, self.accelerator = config, data, accelerator
        device = accelerator.device
        self.pos_weight = data.pos_weight.to(device)
        self.token_pos_weight = None if data.token_pos_weight is None else data.token_pos_weight.to(device)
        self.quantize = False
        self.codebook_stats = None

    def epoch_loader(self, epoch: int):
        from functools import partial

        from training.data import batch_loader, epoch_batches

        train = self.data.splits["train"]
        batches = epoch_batches(len(train), self.config.batch_size, seed=self.config.seed, epoch=epoch)
        return batch_loader(train, partial(self._collate, epoch=epoch), batches, seed=self.config.seed + epoch)

    def _collate(self, indices: list[int], *, epoch: int) -> dict[str, torch.Tensor]:
        c = self.config
        batch = {"index": torch.as_tensor(indices), "labels": self.data.labels["train"][indices],
                 "video": augment(self.data.videos["train"][indices], indices, seed=c.seed, epoch=epoch,
                                  shift=c.shift_voxels, jitter=c.intensity_jitter)}
        if self.data.token_targets is not None:
            batch["tokens"] = self.data.token_targets[indices]
        return batch

    def start_epoch(self, model, epoch: int, fresh: bool) -> None:
        self.quantize = epoch >= self.config.epochs
        if fresh and epoch == self.config.epochs:  # resumed inside the epoch: the checkpoint holds the codebook
            self.codebook_stats = _fit_codebook(self.accelerator.unwrap_model(model), self.data.videos["train"],
                                                self.config, self.accelerator.device)

    def loss(self, model, batch) -> torch.Tensor:
        with_tokens = "tokens" in batch
        result = model(batch["video"], self.quantize, with_tokens=with_tokens)
        logits, token_logits = result if with_tokens else (result, None)
        loss = class_weighted_bce(logits.float(), batch["labels"], self.pos_weight)
        if token_logits is not None:
            loss = loss + self.config.token_loss_weight * F.binary_cross_entropy_with_logits(
                token_logits.float(), batch["tokens"], pos_weight=self.token_pos_weight)
        return loss

    def evaluate(self, model, epoch: int) -> float:
        core, valid = self.accelerator.unwrap_model(model), self.data.splits["valid"]
        val_logits = predict_logits(core, self.data.videos["valid"], quantize=self.quantize,
                                    batch=max(self.config.batch_size, 16), device=self.accelerator.device)
        val_loss = float(class_weighted_bce(val_logits, self.data.labels["valid"], self.data.pos_weight))
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(f"epoch {epoch + 1}/{self.config.epochs + self.config.vq_epochs} "
                       f"({'through the VQ' if self.quantize else 'no VQ'}): valid loss {val_loss:.4f}, "
                       f"valid macro AUROC {_macro_auroc(torch.sigmoid(val_logits).numpy(), valid.labels):.3f}")
        return val_loss

    def selectable(self, epoch: int) -> bool:
        return epoch >= self.config.epochs


def _fit_codebook(core: EncoderWithHead, train_videos: torch.Tensor, config: EncoderTrainConfig, device) -> dict:
    core.eval()
    tokens = pre_vq_tokens(core.encoder, train_videos, batch=max(config.batch_size, 16), device=device,
                           limit=config.kmeans_tokens, seed=config.seed, to_input=core.encoder_input)
    return fit_codebook(core.encoder, tokens, iters=config.kmeans_iters, seed=config.seed)


def _jsonable(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d))


def _write_outputs(out, core, dataset, splits, videos, labels, pp, config, device, eval_batch, *, state,
                   codebook_stats, train_seconds, pos_weight, cache_out) -> EncoderTrainResult:
    """Freeze: split the module into encoder weights (CT-CLIP keys) and a plain head, then compute
    every case's latent and logits on the inference path for the report (and the cache)."""
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

    core.cpu().eval()
    encoder, head = core.encoder, core.head
    head.requires_grad_(False)
    fold_input_affine(head, *core.head_input_affine())
    encoder.set_trainable("none")
    save_encoder_weights(encoder, Path(out) / ENCODER_FILE)

    latents, logits = {}, {}
    with torch.no_grad():
        for s, v in videos.items():
            latents[s] = torch.cat([encoder(apply_windows(v[i:i + eval_batch], pp))
                                    for i in range(0, len(v), eval_batch)])
            logits[s] = head(latents[s])
    probs = {s: torch.sigmoid(logits[s]).numpy() for s in ("valid", "test")}
    thresholds = choose_thresholds(probs["valid"], splits["valid"].labels, config.threshold_method,
                                   config.min_specificity)
    table = report_table(probs, {s: splits[s].labels for s in probs}, thresholds, dataset.label_set)
    notes = {
        "trained_by": "rad3d train-encoder",
        "data": dataset.source.absolute().to_dict(),
        "train_config": _jsonable(config.identity()),
        "steps": state.step,
        "best_step": state.best_step,
        "best_valid_loss": state.best_val_loss,
        "codebook": codebook_stats,
        "train_seconds": round(train_seconds, 1),
        "pos_weight": [round(float(w), 4) for w in pos_weight],
        "macro_auroc": {s: macro_auroc(table, s) for s in probs},
    }
    spec = EncoderSpec(name=DEFAULT_ENCODER, config=encoder.cfg.to_dict(), weights=ENCODER_FILE)
    write_image_model(out, label_set=dataset.label_set, preprocess=pp, encoder_spec=spec, head=head,
                      thresholds=thresholds, notes=notes,
                      valid_auroc=per_label_auroc(table, "valid", dataset.label_set.names))
    write_report(out, table, f"Demo encoder + classifier trained end to end on phantoms ({dataset.label_set.name})",
                 rule=threshold_rule(config.threshold_method, config.min_specificity))
    if cache_out is not None:
        _fill_cache(cache_out, Path(out), encoder, pp, splits, latents, logits, dataset.label_set)
    return EncoderTrainResult(Path(out), state.step, table, notes)


def _fill_cache(cache_out, out: Path, encoder, pp, splits, latents, logits, label_set) -> None:
    from engine.cache import EmbeddingCache
    from engine.embedding import file_fingerprint, identity_for
    from engine.rundir import load_image_model

    weights = out / ENCODER_FILE
    cache = EmbeddingCache.create_or_open(cache_out, identity_for(DEFAULT_ENCODER, encoder.cfg.to_dict(), weights, pp,
                                                                  encoder.cfg.dim_latent),
                                          load_image_model(out)[1].provenance)  # the phantoms it embeds trained it
    by_name = {}
    for s, sp in splits.items():
        for name, lat, lg in zip(sp.volume_names, latents[s].numpy(), logits[s].numpy()):
            cache.put(name, lat)
            by_name[name] = lg
    classifier = out / "classifier.safetensors"
    cache.set_logits(by_name, label_set=label_set.name,
                     classifier=f"{classifier.resolve()}:{file_fingerprint(classifier)}")
