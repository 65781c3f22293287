"""The training recipes' settings: one typed config per command (`rad3d train`, `evaluate`, `sweep`, `logit-curve`,
`train-encoder`, `train-classifier`), each field with its default and its command-line help. Kept
free of torch so the commands build their options from these fields without loading models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from engine.config import JsonConfig, coerce_nested, setting, setting_like
from engine.data.source import DataSource
from engine.errors import ConfigError
from engine.model_configs import PreprocessConfig, Task, check_threshold_method
from study.consistency import ConsistencyConfig
from study.metrics.text import CONVENTIONS, DEFAULT_CONVENTION

Schedule = Literal["linear", "cosine", "constant"]
SCHEDULES = get_args(Schedule)
Section = Literal["findings", "impression"]
Precision = Literal["auto", "no", "bf16", "fp16"]
# Settings that may differ between the run that wrote a checkpoint and the one resuming it:
# where things are (folders move between sessions) and how often to save or validate.
_RESUMABLE_CHANGES = {"data", "cache", "decoder", "image_model", "out", "gguf_file", "save_every_steps",
                      "eval_every_steps", "mixed_precision"}


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    variant: str = setting(help="v1, v2, v3, linear, linear-prefix, r2gengpt or baseline")
    data: DataSource = setting(help="the dataset (a folder path is read as DataSource(root=path))", cli=False)
    cache: str = setting(help="embedding cache of that dataset (rad3d embed)")
    decoder: str = setting(help="the decoder: a local causal-LM folder (config, weights, tokenizer)", aliases=("--llm",))
    image_model: str = setting(help="IMAGE folder (or a run) with encoder, classifier, label set")
    out: str = setting(help="run directory to write")
    gguf_file: str | None = setting(None, "a GGUF file inside --decoder to de-quantise and use")
    epochs: int = setting(10, "epochs")
    lr: float = setting(2e-5, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    batch_size: int = setting(8, "cases per step and process")
    prefix_len: int = setting(10, "prefix tokens")
    clip_len: int = setting(10, "tokens the input is projected to")
    layers: int = setting(8, "transformer connector layers")
    heads: int = setting(8, "connector attention heads")
    max_report_tokens: int | None = setting(None, "truncate longer reports to N tokens (EOS kept)")
    section: Section = setting("findings", "report section to learn (findings: the paper's task; impression is short)")
    seed: int = setting(0, "initialisation and data order")
    schedule: Schedule = setting("linear", "LR after the warmup: linear or cosine decay to 0, or constant")
    warmup_steps: int | None = setting(None, "linear warmup steps (default 5% of the steps)")
    max_steps: int | None = setting(None, "cap on optimiser steps (the LR schedule spans them)")
    max_grad_norm: float = setting(0.0, "clip gradients to this norm (0: off)")
    lora: bool = setting(False, "LoRA adapters on the decoder instead of freezing/fine-tuning it")
    train_split: str = setting("train", "split to train on")
    valid_split: str = setting("valid", "split for validation loss")
    save_every_steps: int | None = setting(None, "also checkpoint every N steps (besides every epoch)")
    eval_every_steps: int | None = setting(None, "also validate every N steps (default: each epoch)")
    mixed_precision: Precision = setting("auto", "auto: bf16 on CUDA, fp32 on the CPU")

    def __post_init__(self):
        object.__setattr__(self, "data", DataSource.coerce(self.data))
        for name in ("epochs", "batch_size", "prefix_len", "clip_len", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_every_steps", "eval_every_steps", "max_report_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1 when given, got {value}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"lr must be positive and weight decay / grad norm non-negative: {self}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    def identity(self) -> dict:
        """The settings that decide the training trajectory: a checkpoint resumes only under these."""
        identity = {k: v for k, v in self.to_dict().items() if k not in _RESUMABLE_CHANGES}
        # The folder may move, but which CSVs and split column choose train and valid may not change.
        data = DataSource.coerce(self.data).to_dict()
        identity["data_selection"] = {k: (Path(v).name if k.endswith("_csv") else v)
                                      for k, v in data.items() if k != "root" and v is not None}
        return identity


@dataclass(frozen=True)
class EvaluateConfig(JsonConfig):
    run: str = setting(help="run directory (rad3d train)")
    data: DataSource = setting(help="the dataset (a folder path is read as DataSource(root=path))", cli=False)
    cache: str = setting(help="embedding cache of that dataset")
    out: str = setting(help="evaluation folder to write")
    split: str = setting("test", "split to evaluate")
    batch_size: int = setting(16, "cases generated together")
    max_new_tokens: int | None = setting(None, "report length cap (default: the run's setting)")
    beams: int = setting(1, "beam search width (1: greedy)")
    limit: int | None = setting(None, "only the first N cases of the split")
    device: str | None = setting(None, "cpu or cuda (default: cuda when present)")
    run_name: str | None = setting(None, "the predictions' run column (default: the run folder's name)", cli=False)
    task: Literal["report", "vqa"] | None = setting(
        None, "a multimodal run's task: report or vqa (default: vqa when it was trained for it); prefix runs: report")
    baseline: str | None = setting(None, "--task vqa: another VQA evaluation folder (e.g. the --no-image run's) "
                                   "shown beside this one per question type")
    bertscore_model: str | None = setting(None, "local encoder folder for BERTScore (default: bundled all-MiniLM-L6-v2)")
    bertscore: bool = setting(True, "BERTScore (--no-bertscore skips it)")
    meteor: bool = setting(True, "METEOR, which needs Java (--no-meteor skips it)")
    resamples: int = setting(5000, "bootstrap resamples")
    seed: int = setting(0, "bootstrap seed")
    output_format: Literal["rad3d", "vlm3d"] = setting(
        "rad3d", "vlm3d: also write the VLM3D challenge's submission and ground-truth JSON and their scores "
        "(vlm3d_submission.json, vlm3d_ground_truth.json, vlm3d_metrics.json) beside the normal outputs",
        flag="--format")
    convention: str = setting(
        DEFAULT_CONVENTION, "text convention of BLEU, METEOR, ROUGE-L and CIDEr-D: r2gen (R2Gen's "
        "clean_report_mimic_cxr, as published CT-RATE numbers), coco (PTB tokenizer), raw",
        choices=tuple(sorted(CONVENTIONS)))
    consistency: ConsistencyConfig = setting(
        help="report-vs-classifier consistency settings (EVAL/consistency.*; --guarded adds a guarded column)",
        default_factory=ConsistencyConfig, cli=False)

    def __post_init__(self):
        if self.output_format not in ("rad3d", "vlm3d"):
            raise ConfigError(f"output format must be 'rad3d' or 'vlm3d', not {self.output_format!r}")
        object.__setattr__(self, "data", DataSource.coerce(self.data))
        if self.batch_size < 1 or self.beams < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ConfigError(f"batch size, beams and max new tokens must be at least 1: {self}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1, got {self.limit}")
        from study.metrics.text import text_convention

        text_convention(self.convention)  # an unknown name fails here, before any model loads


@dataclass(frozen=True)
class SweepConfig(JsonConfig):
    data: DataSource = setting(help="the dataset (a folder path is read as DataSource(root=path))", cli=False)
    cache: str = setting(help="embedding cache of that dataset")
    image_model: str = setting(help="IMAGE folder with encoder, classifier, label set")
    out: str = setting(help="sweep folder")
    decoders: tuple[tuple[str, str], ...] = setting(help="decoders to sweep, each NAME=local causal-LM folder", cli=False)
    variants: tuple[str, ...] = setting(("v3",), "variants")
    prefix_lens: tuple[int, ...] = setting((10,), "prefix lengths")
    layers: tuple[int, ...] = setting((8,), "connector layers")
    clip_len: int | None = setting(None, "projection tokens (default: each point's prefix length)")
    epochs: int = setting_like(TrainConfig, "epochs", "epochs per run")
    max_steps: int | None = setting_like(TrainConfig, "max_steps", "cap on steps per run")
    lr: float = setting_like(TrainConfig, "lr")
    batch_size: int = setting_like(TrainConfig, "batch_size")
    max_report_tokens: int | None = setting_like(TrainConfig, "max_report_tokens")
    seed: int = setting(0, "seed")
    save_every_steps: int | None = setting_like(TrainConfig, "save_every_steps")
    eval_split: str = setting("valid", "split to evaluate on (test for final tables)")
    eval_batch_size: int = setting_like(EvaluateConfig, "batch_size", "generation batch size")
    max_new_tokens: int | None = setting_like(EvaluateConfig, "max_new_tokens")
    eval_limit: int | None = setting(None, "evaluate only the first N cases")
    bertscore_model: str | None = setting(None, "local encoder folder for BERTScore")
    bertscore: bool = setting(True, "BERTScore (--no-bertscore skips it)")
    meteor: bool = setting(True, "METEOR (--no-meteor skips it)")
    resamples: int = setting_like(EvaluateConfig, "resamples")

    def __post_init__(self):
        object.__setattr__(self, "data", DataSource.coerce(self.data))
        if not self.decoders:
            raise ConfigError("a sweep needs at least one decoder (--decoders NAME=PATH)")
        names = [n for n, _ in self.decoders]
        if len(set(names)) != len(names):
            raise ConfigError(f"decoder names repeat: {names}")
        bad = [n for n in names if not n or any(c in n for c in "/\\ ")]
        if bad:
            raise ConfigError(f"decoder names must be non-empty without slashes or spaces: {bad}")


@dataclass(frozen=True)
class LogitCurveConfig(JsonConfig):
    """`rad3d logit-curve`: V-3 on synthetic logits of chosen AUROCs, V-3 on the classifier's own, and V-2 once,
    all by one connector recipe (training/logit_curve.py)."""

    data: DataSource = setting(help="the dataset, with labels (a folder path is read as DataSource(root=path))",
                               cli=False)
    cache: str = setting(help="embedding cache of that dataset, with the image model's logits")
    image_model: str = setting(help="IMAGE folder with encoder, classifier, label set")
    decoder: str = setting(help="the decoder: a local causal-LM folder", aliases=("--llm",))
    out: str | None = setting(None, "study folder: runs/, evals/, results.csv, logit_curve.html/.png, progress.json "
                              "(default $RAD3D_HOME/logit-curve, where the app's Research tab shows it)")
    levels: tuple[float, ...] = setting((0.6, 0.7, 0.8, 0.9, 0.95, 1.0), "target macro AUROCs of the synthetic logits")
    real: bool = setting(True, "also V-3 on the image model's own logits: the marked point (--no-real skips it)")
    noise_seed: int = setting(0, "seed of the synthetic logits' noise (one draw per case, shared by every level)")
    section: Section = setting_like(TrainConfig, "section")
    epochs: int = setting_like(TrainConfig, "epochs", "epochs per run")
    max_steps: int | None = setting_like(TrainConfig, "max_steps", "cap on steps per run")
    lr: float = setting_like(TrainConfig, "lr")
    batch_size: int = setting_like(TrainConfig, "batch_size")
    prefix_len: int = setting_like(TrainConfig, "prefix_len")
    clip_len: int = setting_like(TrainConfig, "clip_len")
    layers: int = setting_like(TrainConfig, "layers")
    heads: int = setting_like(TrainConfig, "heads")
    max_report_tokens: int | None = setting_like(TrainConfig, "max_report_tokens")
    seed: int = setting(0, "initialisation, data order and bootstrap")
    save_every_steps: int | None = setting_like(TrainConfig, "save_every_steps")
    eval_split: str = setting("test", "split the curve is measured on (nothing is chosen from it)")
    eval_batch_size: int = setting_like(EvaluateConfig, "batch_size", "generation batch size")
    max_new_tokens: int | None = setting_like(EvaluateConfig, "max_new_tokens")
    eval_limit: int | None = setting(None, "evaluate only the first N cases")
    bertscore: bool = setting(False, "also BERTScore (off: the curve needs finding F1 and GREEN-style)")
    meteor: bool = setting(False, "also METEOR (needs Java)")
    resamples: int = setting_like(EvaluateConfig, "resamples")
    png: bool = setting(True, "also write logit_curve.png (plotly + kaleido + a Chrome/Chromium; --no-png: HTML only)")

    def __post_init__(self):
        object.__setattr__(self, "data", DataSource.coerce(self.data))
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
        if not self.levels:
            raise ConfigError("the logit curve needs at least one level (--levels 0.6 0.8 ...)")
        bad = [v for v in self.levels if not 0.5 <= v <= 1.0]
        if bad or len(set(self.levels)) != len(self.levels):
            raise ConfigError(f"levels must be distinct AUROCs between 0.5 and 1, got {list(self.levels)}")

    def train_config(self, variant: str, out: str) -> TrainConfig:
        """The one recipe every point is trained by: only the variant (and the logits) differ."""
        return TrainConfig(
            variant=variant, data=self.data, cache=self.cache, decoder=self.decoder, image_model=self.image_model,
            out=out, section=self.section, epochs=self.epochs, max_steps=self.max_steps, lr=self.lr,
            batch_size=self.batch_size, prefix_len=self.prefix_len, clip_len=self.clip_len, layers=self.layers,
            heads=self.heads, max_report_tokens=self.max_report_tokens, seed=self.seed,
            save_every_steps=self.save_every_steps)

    def evaluate_config(self, run: str, out: str, name: str) -> EvaluateConfig:
        return EvaluateConfig(
            run=run, data=self.data, cache=self.cache, out=out, split=self.eval_split, batch_size=self.eval_batch_size,
            max_new_tokens=self.max_new_tokens, limit=self.eval_limit, run_name=name, bertscore=self.bertscore,
            meteor=self.meteor, resamples=self.resamples, seed=self.seed)


@dataclass
class ClassifierTrainConfig(JsonConfig):
    epochs: int = setting(300, "maximum epochs")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    batch_size: int = setting(64, "cases per step")
    hidden: int = setting(0, "hidden width of the head (0: one Linear layer, as the paper's classification layer)")
    dropout: float = setting(0.0, "dropout before the head's output layer")
    patience: int = setting(30, "stop after this many epochs without a lower validation loss")
    seed: int = setting(0, "initialisation and data order")
    threshold_method: str = setting(
        "youden-floor", "how per-finding thresholds are chosen on valid (engine.classifier.choose_thresholds): "
        "youden-floor (the best sensitivity + specificity among thresholds with specificity >= --min-specificity), "
        "specificity (the lowest threshold with specificity >= --min-specificity), youden or f1")
    min_specificity: float = setting(0.9, "the specificity floor of threshold methods youden-floor and specificity")
    tune_last_layer: bool = setting(False, "fine-tune the encoder's last layer (CT-ViT's last temporal block and its "
                                    "output norm) and a new head on the data's volumes instead of a head on cached "
                                    "latents; needs --image-model (the base), writes a new encoder")
    encoder_lr: float = setting(1e-4, "AdamW learning rate of the encoder's last layer (--tune-last-layer)")

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.lr <= 0 or self.encoder_lr <= 0:
            raise ConfigError(f"bad classifier training settings: {self}")
        check_threshold_method(self.threshold_method, self.min_specificity)


# The demo grid: 3.75 mm in-plane over 96 voxels = a 360 mm field of view (the phantoms' body
# spans up to ~330 mm), 7.5 mm slices over 48 = 360 mm along z (the phantoms' chest is ~300 mm).
DEMO_PREPROCESS = PreprocessConfig(spacing_mm=(3.75, 3.75, 7.5), shape_xyz=(96, 96, 48))
# The demo's encoder input (encoder config `demo-windows`): the same grid over -1000..3000 HU as five
# windows (lung, low-attenuation lung, mediastinum, wide, metal) plus the reference channel. Valid-split
# macro AUROC after 4 epochs from scratch on the 834 training phantoms (scratch trials of this encoder and
# head before the VQ, one seed, token loss on; not kept as commands):
# CT-CLIP's one [-1000, 1000] channel 0.555; + standardised latent 0.571; + reference channel 0.583;
# five windows + standardised latent 0.602; + reference channel 0.614. The windows keep absolute
# attenuation (emphysema, metal vs bone); the reference channel keeps the per-patch LayerNorm from
# normalising it away (see PreprocessConfig.reference_channel).
DEMO_WINDOWED_PREPROCESS = PreprocessConfig(
    spacing_mm=(3.75, 3.75, 7.5), shape_xyz=(96, 96, 48), hu_range=(-1000.0, 3000.0),
    windows=((-1350.0, 150.0), (-1000.0, -700.0), (-135.0, 215.0), (-500.0, 1300.0), (1000.0, 3000.0)),
    reference_channel=4.0)
DEMO_PREPROCESSING = {"plain": DEMO_PREPROCESS, "windowed": DEMO_WINDOWED_PREPROCESS}


def demo_preprocess(name: str) -> PreprocessConfig:
    """A named demo input ("plain" or "windowed")."""
    if name not in DEMO_PREPROCESSING:
        raise ConfigError(f"unknown demo preprocessing {name!r} (known: {', '.join(DEMO_PREPROCESSING)})")
    return DEMO_PREPROCESSING[name]




@dataclass
class EncoderTrainConfig(JsonConfig):
    encoder_config: str = setting("demo-small", "encoder config name (engine/configs/encoders) or JSON file")
    # The command's --preprocess takes a JSON file or a demo name instead (training/commands/train_encoder.py).
    preprocess: PreprocessConfig = setting(
        default_factory=lambda: DEMO_PREPROCESS, cli=False,
        help="PreprocessConfig JSON, or `demo-windowed` (the demo's five HU windows + reference channel; use with "
        "--encoder-config demo-windows) (default: one CT-CLIP channel, 3.75 x 3.75 x 7.5 mm, 96 x 96 x 48)")
    epochs: int = setting(12, "end-to-end epochs before the codebook is fitted")
    vq_epochs: int = setting(3, "fine-tune epochs through the fitted VQ codebook")
    lr: float = setting(1e-3, "peak AdamW learning rate")
    weight_decay: float = setting(0.05, "AdamW weight decay")
    warmup_steps: int = setting(20, "linear warmup steps")
    batch_size: int = setting(8, "volumes per step")
    hidden: int = setting(0, "hidden width of the head (0: one Linear layer)")
    tied_projection: bool = setting(True, "train the latent projection shared over positions (EncoderWithHead)")
    grad_clip: float = setting(1.0, "clip gradients to this norm")
    shift_voxels: tuple[int, int, int] = setting(
        (2, 4, 4), "largest random shift of the training augmentation along D, H, W (0 0 0 turns shifts off)",
        metavar=("D", "H", "W"))
    intensity_jitter: float = setting(0.03, "sd of the random gain and offset (input scale is [-1, 1])")
    kmeans_tokens: int = setting(100_000, "tokens sampled to fit the VQ codebook")
    kmeans_iters: int = setting(15, "k-means iterations of the codebook fit")
    threshold_method: str = setting(
        "youden-floor", "how per-finding thresholds are chosen on valid (engine.classifier.choose_thresholds): "
        "youden-floor (the best sensitivity + specificity among thresholds with specificity >= --min-specificity), "
        "specificity (the lowest threshold with specificity >= --min-specificity), youden or f1")
    min_specificity: float = setting(0.9, "the specificity floor of threshold methods youden-floor and specificity")
    seed: int = setting(0, "initialisation and data order")
    # Auxiliary per-token loss (training only; training/token_targets.py): a linear head on every
    # pre-VQ token predicts which findings touch its patch, from the phantom truth. 0 turns it off.
    token_loss_weight: float = setting(
        1.0, "weight of the auxiliary per-token finding loss, from DIR/phantom_truth.json (0 turns it off, e.g. "
        "for data without phantom truth)")
    token_pos_weight_max: float = setting(
        10.0, "cap of the token loss's per-finding positive weight (1-p)/p (a nodule marks a few of a volume's "
        "tokens, so its uncapped weight is in the hundreds)")
    standardize_latent: bool = setting(
        True, "train the head on BatchNorm-standardised latents, folded into the saved head")

    def __post_init__(self):
        coerce_nested(self)
        self.shift_voxels = tuple(int(s) for s in self.shift_voxels)
        if self.epochs < 0 or self.vq_epochs < 0 or self.epochs + self.vq_epochs < 1:
            raise ConfigError(f"need at least one epoch (epochs={self.epochs}, vq_epochs={self.vq_epochs})")
        if self.batch_size < 1 or self.lr <= 0 or self.kmeans_iters < 1 or self.kmeans_tokens < 1:
            raise ConfigError(f"bad encoder training settings: {self}")
        check_threshold_method(self.threshold_method, self.min_specificity)
        if min(self.shift_voxels) < 0:
            raise ConfigError(f"--shift-voxels must be 0 or more, got {list(self.shift_voxels)}")
        if not self.token_pos_weight_max >= 1.0:  # also refuses NaN
            raise ConfigError(f"--token-pos-weight-max must be at least 1, got {self.token_pos_weight_max}")

    def identity(self) -> dict:
        """What a resumed run must share with the one that wrote the checkpoint."""
        return self.to_dict()


@dataclass(frozen=True)
class MultimodalTrainConfig(JsonConfig):
    """`rad3d train-multimodal`: image tokens + a LoRA-tuned decoder (engine.multimodal), M3D's two stages
    (training/multimodal_recipe.py)."""

    data: DataSource = setting(help="the dataset (a folder path is read as DataSource(root=path))", cli=False)
    cache: str = setting(help="embedding cache of that dataset (rad3d embed)")
    decoder: str = setting(help="the decoder: a local causal-LM folder (config, weights, tokenizer)")
    image_model: str = setting(help="IMAGE folder (or a run) whose features the connector reads")
    out: str = setting(help="run directory to write")
    stage: int = setting(1, "1: the connector alone (decoder frozen); 2: connector + LoRA adapters", choices=(1, 2))
    init_from: str | None = setting(None, "stage 2: the stage-1 run whose connector it starts from")
    tasks: tuple[Task, ...] = setting(("report",), "tasks to train: report and/or vqa")
    section: Section = setting_like(TrainConfig, "section", "report section the report task answers")
    gguf_file: str | None = setting_like(TrainConfig, "gguf_file")
    connector: str = setting("linear", "connector kind (engine.connectors.CONNECTORS) making the image tokens")
    image_tokens: int = setting(8, "image tokens spliced into the prompt (M3D: 256)")
    with_logits: bool = setting(False, "the connector also reads the 18 classifier logits (RAD3D's idea carried over)")
    image: bool = setting(True, "--no-image: the text-only baseline, the same recipe without image tokens (stage 2)")
    lora_r: int = setting(8, "LoRA rank (stage 2)")
    lora_alpha: int = setting(16, "LoRA alpha (stage 2)")
    lora_dropout: float = setting(0.05, "LoRA dropout (stage 2)")
    lora_targets: tuple[str, ...] | None = setting(None, "LoRA target modules (default: the family's attention "
                                                   "projections, engine.decoders.lora.LORA_TARGETS)")
    epochs: int = setting(3, "epochs")
    lr: float = setting(1e-4, "AdamW learning rate")
    weight_decay: float = setting_like(TrainConfig, "weight_decay")
    batch_size: int = setting_like(TrainConfig, "batch_size")
    max_answer_tokens: int | None = setting(None, "truncate longer answers to N tokens (EOS kept)")
    seed: int = setting_like(TrainConfig, "seed")
    schedule: Schedule = setting_like(TrainConfig, "schedule")
    warmup_steps: int | None = setting_like(TrainConfig, "warmup_steps")
    max_steps: int | None = setting_like(TrainConfig, "max_steps")
    max_grad_norm: float = setting_like(TrainConfig, "max_grad_norm")
    train_split: str = setting_like(TrainConfig, "train_split")
    valid_split: str = setting_like(TrainConfig, "valid_split")
    save_every_steps: int | None = setting_like(TrainConfig, "save_every_steps")
    eval_every_steps: int | None = setting_like(TrainConfig, "eval_every_steps")
    mixed_precision: Precision = setting_like(TrainConfig, "mixed_precision")

    def __post_init__(self):
        object.__setattr__(self, "data", DataSource.coerce(self.data))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if not self.image and (self.stage != 2 or self.init_from):
            raise ConfigError("--no-image (the text-only baseline) trains LoRA alone: --stage 2 without --init-from")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks) or set(self.tasks) - {"report", "vqa"}:
            raise ConfigError(f"tasks must be report and/or vqa, each once, got {list(self.tasks)}")
        for name in ("epochs", "batch_size", "image_tokens", "lora_r"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_every_steps", "eval_every_steps", "max_answer_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1 when given, got {value}")
        if self.lr <= 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"lr must be positive and weight decay / grad norm non-negative: {self}")

    def identity(self) -> dict:
        """The settings that decide the training trajectory: a checkpoint resumes only under these."""
        moved = _RESUMABLE_CHANGES | {"init_from"}  # files may move; their content is in the data
        return {k: v for k, v in self.to_dict().items() if k not in moved}
