"""`ImageModel`: the frozen image model in one object (preprocessing → CT-ViT encoder → abnormality
head, with the label set, per-finding thresholds and validation AUROC that say how to read its
probabilities). Inference, embedding, connector training and the app all use it.

The model knows nothing of files; `open_image_model` / `image_model_from_config` below read an
image-model folder (IMAGE/image_model.json) or a run's image spec and build one (open_clip's
model / factory split), loading every weight strictly (engine.weights).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.classifier import AbnormalityHead, at_threshold, is_weak, mark_weak
from engine.errors import ConfigError
from engine.labels import LabelSet
from engine.preprocess import PreprocessConfig, preprocess
from engine.volume import Volume


@dataclass
class ImageFeatures:
    latent: torch.Tensor  # (d_embed,) float32 on the CPU
    logits: torch.Tensor  # (n_labels,) float32 on the CPU
    preprocess_seconds: float
    encode_seconds: float  # encoder and classifier

    @property
    def probabilities(self) -> np.ndarray:
        return torch.sigmoid(self.logits).numpy()


class ImageModel(nn.Module):
    def __init__(self, encoder: nn.Module | None, classifier: AbnormalityHead, *, preprocess: PreprocessConfig,
                 label_set: LabelSet, thresholds: Sequence[float], valid_auroc: Sequence[float | None] | None = None,
                 spec=None, source: str | Path | None = None):
        """encoder None: the head and configs only (connector training reads cached latents).
        spec: the engine.rundir.ImageModelConfig it was built from (weights paths, provenance);
        source: its folder, for messages."""
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.preprocess_config = preprocess
        self.label_set = label_set
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.spec, self.source = spec, source
        if classifier.config.n_labels != len(label_set) or len(self.thresholds) != len(label_set):
            raise ConfigError(f"classifier has {classifier.config.n_labels} outputs and {len(self.thresholds)} "
                              f"thresholds for label set {label_set.name!r} of {len(label_set)}", source)
        # Per-finding validation AUROC when recorded (None entries: undefined); None: unknown.
        self.valid_auroc = (dict(zip(label_set.names, valid_auroc))
                            if valid_auroc is not None and len(valid_auroc) == len(label_set) else None)

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    # -- the path, one stage at a time ---------------------------------------------------------
    def preprocess(self, volume: Volume) -> torch.Tensor:
        """Volume → encoder input (C, D, H, W) on the CPU."""
        return preprocess(volume, self.preprocess_config)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(C, D, H, W) or (B, C, D, H, W) encoder input → (B, d_embed) latents on the model's device."""
        if self.encoder is None:
            raise ConfigError("this image model was loaded without its encoder", self.source)
        x = x.unsqueeze(0) if x.dim() == 4 else x
        return self.encoder(x.to(self.device))

    @torch.no_grad()
    def classify(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, d_embed) latents → (B, n_labels) logits."""
        return self.classifier(torch.as_tensor(latent, dtype=torch.float32).to(self.device))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encode(x)
        return latent, self.classify(latent)

    def stages(self, volume: Volume) -> Iterator[tuple[str, float, ImageFeatures | None]]:
        """(stage, its seconds, None) after preprocessing and after encoding, then ("classify",
        seconds, the features): for a caller that reports progress between stages."""
        start = time.perf_counter()
        x = self.preprocess(volume)
        preprocess_s = time.perf_counter() - start
        yield "preprocess", preprocess_s, None
        start = time.perf_counter()
        latent = self.encode(x)
        encode_s = time.perf_counter() - start
        yield "encode", encode_s, None
        start = time.perf_counter()
        logits = self.classify(latent)
        classify_s = time.perf_counter() - start
        yield "classify", classify_s, ImageFeatures(latent[0].float().cpu(), logits[0].float().cpu(), preprocess_s,
                                                    encode_s + classify_s)

    def features(self, volume: Volume) -> ImageFeatures:
        """Preprocess → encoder latent → classifier logits for one volume."""
        *_, (_, _, features) = self.stages(volume)
        return features

    # -- reading the probabilities -------------------------------------------------------------
    def by_name(self, probabilities) -> dict[str, float]:
        return {n: float(p) for n, p in zip(self.label_set.names, probabilities)}

    def positives(self, probabilities) -> list[str]:
        """The findings at or above their validation-chosen thresholds, in label-set order."""
        return [n for n, hit in zip(self.label_set.names, at_threshold(probabilities, self.thresholds)) if hit]

    def is_weak(self, name: str) -> bool:
        """Whether the classifier is weak on this finding (validation AUROC below WEAK_AUROC)."""
        return is_weak((self.valid_auroc or {}).get(name))

    def marked(self, names: Sequence[str]) -> list[str]:
        """Finding names, each the classifier is weak on (validation AUROC below WEAK_AUROC) marked ⚠."""
        return mark_weak(names, self.valid_auroc)


# -- the factory: files → ImageModel ---------------------------------------------------------------
def load_encoder(name: str, config: dict, weights: str | Path | None) -> nn.Module:
    """A registered encoder built on the meta device (no memory for random weights) with `weights`
    (that encoder's checkpoint key names: CT-CLIP's for ctvit, M3D's for vit3d) loaded strictly;
    weights None leaves it on meta (its config only)."""
    from engine.encoders import ENCODERS, load_encoder_weights

    with torch.device("meta"):
        encoder = ENCODERS.build(name, config)
    if weights is not None:
        load_encoder_weights(name, encoder, Path(weights))
    return encoder


def image_model_from_config(cfg, *, source: str | Path | None = None, device: str | torch.device = "cpu",
                            with_encoder: bool = True) -> ImageModel:
    """An ImageModel from an engine.rundir.ImageModelConfig whose weights paths are absolute (as
    engine.rundir.load_image_model gives it), in eval mode on `device`."""
    from engine.weights import load_weights_strict

    encoder = load_encoder(cfg.encoder.name, cfg.encoder.config, cfg.encoder.weights) if with_encoder else None
    classifier = AbnormalityHead(cfg.classifier.config)
    load_weights_strict(classifier, cfg.classifier.weights, "classifier")
    model = ImageModel(encoder, classifier, preprocess=cfg.preprocess, label_set=cfg.label_set,
                       thresholds=cfg.classifier.thresholds, valid_auroc=cfg.classifier.valid_auroc, spec=cfg,
                       source=source)
    return model.eval().to(device)


def open_image_model(path: str | Path, *, device: str | torch.device = "cpu", with_encoder: bool = True) -> ImageModel:
    """The ImageModel of an image-model folder or of a run directory (whose image model is the same)."""
    from engine.rundir import load_image_model

    root, cfg = load_image_model(path)
    return image_model_from_config(cfg, source=root, device=device, with_encoder=with_encoder)
