"""The configs of a run's modules: preprocessing, classifier head, connector, report generator and
generation settings. They live here, without torch, so a run's config.json reads in a fraction of
a second (`rad3d report` refuses a wrong scan before any model loads); engine.preprocess,
engine.classifier, engine.connectors, engine.model and engine.generation use them from here."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from engine.config import JsonConfig, read_json
from engine.errors import ConfigError

# Bump when the algorithm changes values, so embedding caches made before are refused.
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig(JsonConfig):
    spacing_mm: tuple[float, float, float] = (0.75, 0.75, 1.5)  # target (x, y, z)
    hu_range: tuple[float, float] = (-1000.0, 1000.0)  # clipped, then mapped to [-1, 1]
    shape_xyz: tuple[int, int, int] = (480, 480, 240)  # centre crop / pad target
    clip_before_resample: bool = True  # CT-CLIP inference clips first; its training loader clips after
    # HU windows (low, high), one input channel each, mapped to [-1, 1]; empty: CT-CLIP's one channel.
    # Why: CT-ViT's patch embedding LayerNorms every patch, which removes the patch's mean and
    # contrast; windows saturate at fixed HU, so absolute attenuation (emphysema vs normal lung,
    # metal vs bone) survives that normalisation as the relation between channels.
    windows: tuple[tuple[float, float], ...] = ()
    # Amplitude A of a fixed channel appended last: +A/-A alternating voxel by voxel (a 3-D
    # checkerboard, the same for every volume); 0: none. Why: with even patch sizes every patch holds
    # as many +A as -A voxels, so this channel adds a known, content-free variance to each patch
    # vector; when A dominates, the per-patch LayerNorm divides every patch by nearly the same number
    # and the patch embedding sees absolute intensities instead of each patch's own contrast.
    reference_channel: float = 0.0
    # "ctclip": the above (HU clip, resample to spacing_mm, [-1, 1], centre crop/pad; (C, D=S, H=L, W=P)).
    # "m3d": M3D's (engine.preprocess.preprocess_m3d): per-volume min-max to [0, 1], crop to the
    # foreground, trilinear resize of the whole volume to shape_xyz (M3D: 256 x 256 x 32), axes
    # (C, D=S, H=P, W=L) as M3D's axial images are shown; spacing_mm, hu_range and clipping unused.
    recipe: Literal["ctclip", "m3d"] = "ctclip"

    def __post_init__(self):
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "hu_range", tuple(float(h) for h in self.hu_range))
        object.__setattr__(self, "shape_xyz", tuple(int(n) for n in self.shape_xyz))
        try:
            object.__setattr__(self, "windows", tuple((float(lo), float(hi)) for lo, hi in self.windows))
        except (TypeError, ValueError):
            raise ConfigError(f"preprocess windows {self.windows} must be a list of (low, high) HU pairs") from None
        for lo, hi in self.windows:
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"preprocess window ({lo}, {hi}) must be finite with low < high")
        object.__setattr__(self, "reference_channel", float(self.reference_channel))
        if not (math.isfinite(self.reference_channel) and self.reference_channel >= 0):
            raise ConfigError(f"preprocess reference_channel {self.reference_channel} must be a finite amplitude >= 0")
        if self.recipe not in ("ctclip", "m3d"):
            raise ConfigError(f"preprocess recipe must be 'ctclip' or 'm3d', got {self.recipe!r}")
        if self.recipe == "m3d" and (self.windows or self.reference_channel):
            raise ConfigError("preprocess recipe 'm3d' (min-max to [0, 1]) takes no HU windows or reference channel")
        if len(self.spacing_mm) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise ConfigError(f"preprocess spacing_mm {self.spacing_mm} must be three positive numbers")
        if len(self.hu_range) != 2 or not self.hu_range[0] < self.hu_range[1]:
            raise ConfigError(f"preprocess hu_range {self.hu_range} must be (low, high) with low < high")
        if len(self.shape_xyz) != 3 or not all(n > 0 for n in self.shape_xyz):
            raise ConfigError(f"preprocess shape_xyz {self.shape_xyz} must be three positive sizes")

    @property
    def channels(self) -> int:
        return max(1, len(self.windows)) + (1 if self.reference_channel else 0)

    @property
    def base(self) -> PreprocessConfig:
        """The same grid and HU range with one plain channel: what `apply_windows` starts from."""
        return replace(self, windows=(), reference_channel=0.0)

    def _json_out(self, data: dict) -> dict:
        # Settings at their "off" value are left out, so configs from before they existed keep
        # their fingerprints (and embedding caches).
        if not self.windows:
            del data["windows"]
        if not self.reference_channel:
            del data["reference_channel"]
        if self.recipe == "ctclip":
            del data["recipe"]
        return data

    def fingerprint(self) -> str:
        """Short stable hash of every setting (and the algorithm version): the embedding cache key."""
        payload = json.dumps({"version": PREPROCESS_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# M3D's input (its README: "1*32*256*256", "normalized to 0-1, consider Min-Max Normalization").
M3D_PREPROCESS = PreprocessConfig(shape_xyz=(256, 256, 32), recipe="m3d")


# How per-finding thresholds are chosen on the validation split (engine.classifier.choose_thresholds).
# The default is a rule a clinician can read: the best balance of sensitivity and specificity (Youden)
# among the thresholds at which at most one in ten validation cases without the finding is called
# positive. Max-F1 on a weak classifier picks near-zero thresholds (the demo's first image model:
# sensitivity 1, specificity 0.05) and called 11 findings positive per case against the truth's 4.6;
# the lowest threshold with specificity >= 0.90 ("specificity") also gives a perfect finding 10 %
# false positives, which the Youden choice within the floor does not.
THRESHOLD_METHODS = ("youden-floor", "specificity", "youden", "f1")
DEFAULT_THRESHOLD_METHOD = "youden-floor"
DEFAULT_MIN_SPECIFICITY = 0.9


def check_threshold_method(method: str, min_specificity: float) -> None:
    """A ConfigError for an unknown method or a specificity floor outside (0, 1]."""
    from engine.errors import ConfigError

    if method not in THRESHOLD_METHODS:
        raise ConfigError(f"unknown threshold method {method!r} (use one of {', '.join(THRESHOLD_METHODS)})")
    if not 0 < min_specificity <= 1:
        raise ConfigError(f"the specificity floor must be in (0, 1], got {min_specificity}")


def read_preprocess_config(path: str | Path | None) -> PreprocessConfig:
    """A PreprocessConfig from a JSON file (as `rad3d embed` and `train-classifier` take it); None:
    the defaults, CT-CLIP's 480x480x240 grid."""
    if path is None:
        return PreprocessConfig()
    return PreprocessConfig.from_dict(read_json(path, "preprocessing config"), path)


@dataclass(frozen=True)
class AbnormalityHeadConfig(JsonConfig):
    in_dim: int = 512
    hidden: int = 0  # 0: a single Linear layer; > 0: Linear → GELU → dropout → Linear
    n_labels: int = 18
    dropout: float = 0.0

    def __post_init__(self):
        if self.in_dim < 1 or self.n_labels < 1 or self.hidden < 0:
            raise ConfigError(f"bad classifier head sizes: {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"classifier dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ConnectorConfig(JsonConfig):
    kind: str = "transformer"  # a name in engine.connectors.CONNECTORS
    d_embed: int = 512  # image latent size (CT-CLIP: 512)
    n_labels: int = 0  # classifier logits appended to the latent (V-3: 18; 0 = image only)
    d_llm: int = 2048  # decoder hidden size (LLaMA-3.2-1B: 2048)
    prefix_len: int = 10  # prefix tokens handed to the decoder
    clip_len: int = 10  # tokens the input is first projected to (transformer connector only)
    n_layers: int = 8  # transformer connector depth
    n_heads: int = 8
    mlp_ratio: float = 2.0
    act: Literal["relu", "gelu"] = "relu"  # relu: ClipCap's
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("d_embed", "d_llm", "prefix_len", "clip_len", "n_layers", "n_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"connector {name} must be at least 1, got {getattr(self, name)}")
        if self.n_labels < 0:
            raise ConfigError(f"connector n_labels must be >= 0, got {self.n_labels}")
        if self.act not in ("relu", "gelu"):
            raise ConfigError(f"connector act must be 'relu' or 'gelu', got {self.act!r}")

    @property
    def d_in(self) -> int:
        """Width of the connector's input vector: latent, plus logits when n_labels > 0."""
        return self.d_embed + self.n_labels


@dataclass(frozen=True)
class SpatialPoolingConfig(JsonConfig):
    """M3D-LaMed's SpatialPoolingProjector (spp, mlp, 2 layers, spatial pooling 2: LaMed's train.py
    defaults, which its scripts never override): patch tokens on a (D, H, W) grid → avg_pool3d →
    Linear, GELU, Linear. Defaults: M3D's full size, 2048 tokens of 768 → 256 tokens of d_llm."""

    kind: Literal["spatial-pooling"] = "spatial-pooling"  # its name in engine.connectors.CONNECTORS
    d_embed: int = 768  # the encoder's token width (M3D's ViT: 768)
    d_llm: int = 3072  # decoder hidden size (M3D-LaMed-Phi-3-4B: 3072; Llama-2-7B: 4096)
    token_grid: tuple[int, int, int] = (8, 16, 16)  # the encoder's token grid (D, H, W), row-major
    pool_size: int = 2  # non-overlapping pool_size³ average over the grid
    # Classifier logits as extra tokens (the RAD3D idea carried over; off: M3D's projector): one Linear
    # from the n_labels logits to logit_tokens tokens, appended after the image tokens.
    n_labels: int = 0
    logit_tokens: int = 1

    def __post_init__(self):
        object.__setattr__(self, "token_grid", tuple(int(n) for n in self.token_grid))
        if self.kind != "spatial-pooling":
            raise ConfigError(f"SpatialPoolingConfig.kind must be 'spatial-pooling', got {self.kind!r}")
        for name in ("d_embed", "d_llm", "pool_size", "logit_tokens"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"spatial-pooling connector {name} must be at least 1, got {getattr(self, name)}")
        if self.n_labels < 0:
            raise ConfigError(f"spatial-pooling connector n_labels must be >= 0, got {self.n_labels}")
        if len(self.token_grid) != 3 or any(n < 1 or n % self.pool_size for n in self.token_grid):
            raise ConfigError(f"spatial-pooling token_grid {self.token_grid} must be three sizes (D, H, W), each a "
                              f"multiple of pool_size {self.pool_size}")

    @property
    def n_tokens_in(self) -> int:
        return math.prod(self.token_grid)

    @property
    def pooled_grid(self) -> tuple[int, int, int]:
        return tuple(n // self.pool_size for n in self.token_grid)  # type: ignore[return-value]

    @property
    def prefix_len(self) -> int:
        """Tokens handed to the decoder: the pooled grid (256 at full size), then the logit tokens."""
        return math.prod(self.pooled_grid) + (self.logit_tokens if self.n_labels else 0)


@dataclass(frozen=True)
class ReportGeneratorConfig(JsonConfig):
    variant: str
    connector: ConnectorConfig
    decoder_mode: Literal["frozen", "full", "lora"]  # "full": fine-tuned


@dataclass(frozen=True)
class GenerationSettings(JsonConfig):
    max_new_tokens: int = 256
    num_beams: int = 1  # 1: greedy
    repetition_penalty: float = 1.0  # > 1 discourages tokens already generated
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0  # beam search only
    min_new_tokens: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.repetition_penalty <= 0:
            raise ValueError(f"bad generation settings: {self}")


@dataclass(frozen=True)
class LoraSettings(JsonConfig):
    """LoRA adapters on the decoder (engine.decoders.lora.apply_lora)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: engine.decoders.lora.LORA_TARGETS for the model's family

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA rank and alpha must be positive and dropout in [0, 1): {self}")


# The multimodal system (engine.multimodal): image tokens spliced into a prompt, a LoRA-tuned decoder.
Task = Literal["report", "vqa"]
MULTIMODAL_TASKS = ("report", "vqa")


@dataclass(frozen=True)
class MultimodalConfig(JsonConfig):
    """Image tokens (the connector's `prefix_len` of them, d_llm wide) in place of placeholder
    positions right after BOS, then an instruction, then the answer. decoder_mode "frozen" is
    stage 1 (the connector alone learns), "lora" stage 2 (connector + LoRA adapters)."""

    connector: SpatialPoolingConfig | ConnectorConfig  # spatial-pooling first: its kind refuses the others
    decoder_mode: Literal["frozen", "lora"] = "frozen"
    # False: the text-only baseline (no image tokens; the connector is kept but never read or trained)
    use_image: bool = True

    def __post_init__(self):
        if self.decoder_mode not in ("frozen", "lora"):
            raise ConfigError(f"multimodal decoder_mode must be frozen or lora, got {self.decoder_mode!r}")

    @property
    def image_tokens(self) -> int:
        return self.connector.prefix_len if self.use_image else 0
