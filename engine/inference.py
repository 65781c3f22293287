"""`InferenceSession`: the one object the app and the CLI call. Loaded from a run directory, it
takes a volume (or a path) and returns the label probabilities, the generated report, the prefix
and timings; it also generates from cached latents in batches (evaluation).

Device: CUDA with bf16 when present (the LLM in bf16, the encoder in fp32), otherwise the CPU in
fp32 (bf16 is far slower than fp32 on CPUs without bf16 units).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file

from engine.classifier import AbnormalityHead
from engine.decoders import load_causal_lm
from engine.encoders import ENCODERS
from engine.encoders.checkpoint import load_ctclip_vision
from engine.domain import DomainCheck, body_region
from engine.errors import CheckpointError, ConfigError, OutOfDomainError
from engine.generation import GenerationResult, GenerationSettings, generate_from_prefix, stream_from_prefix
from engine.model import ReportGenerator
from engine.preprocess import preprocess
from engine.rundir import RunDir, load_domain_guard, open_run
from engine.volume import Volume


def pick_device(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """(device, decoder dtype): the given device, else CUDA with bf16 when present, else CPU fp32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return device, (torch.bfloat16 if device.type == "cuda" else torch.float32)


@dataclass
class ImageFeatures:
    latent: torch.Tensor  # (d_embed,) float32
    logits: torch.Tensor  # (n_labels,) float32
    preprocess_seconds: float
    encode_seconds: float

    @property
    def probabilities(self) -> np.ndarray:
        return torch.sigmoid(self.logits).numpy()


@dataclass
class CaseReport:
    source: str
    probabilities: dict[str, float]  # label-set order
    positives: list[str]  # labels at or above their validation threshold
    report: str
    prefix: torch.Tensor  # (prefix_len, d_llm) float32 on the CPU
    n_tokens: int
    finished: bool  # False when max_new_tokens cut the report
    timings: dict[str, float] = field(default_factory=dict)
    domain: DomainCheck | None = None  # None: not checked


def load_weights_strict(module: torch.nn.Module, path: Path, what: str) -> None:
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read {what} weights ({err})", path) from None
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{what} weights do not match the run's config: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}",
            path,
        )


class InferenceSession:
    def __init__(
        self,
        run: RunDir,
        encoder: torch.nn.Module,
        classifier: AbnormalityHead,
        generator: ReportGenerator,
        tokenizer,
        *,
        device: torch.device,
        domain_guard=None,
    ):
        self.run = run
        self.encoder = encoder
        self.classifier = classifier
        self.generator = generator
        self.tokenizer = tokenizer
        self.device = device
        self.domain_guard = domain_guard  # engine.domain.FeatureGuard, or None (a run made before guards)
        cfg = run.config
        self.label_set = cfg.label_set
        self.preprocess_config = cfg.preprocess
        self.thresholds = np.asarray(cfg.classifier.thresholds, dtype=np.float64)
        # Per-finding validation AUROC when the run records it (None entries: undefined).
        auroc = cfg.classifier.valid_auroc
        self.valid_auroc = (dict(zip(self.label_set.names, auroc))
                            if auroc is not None and len(auroc) == len(self.label_set) else None)
        self.settings = cfg.generation
        if len(self.thresholds) != len(self.label_set) or classifier.config.n_labels != len(self.label_set):
            raise ConfigError(
                f"classifier has {classifier.config.n_labels} outputs and {len(self.thresholds)} thresholds "
                f"for a label set of {len(self.label_set)}",
                run.root / "config.json",
            )

    @property
    def provenance(self):
        """What the run was made from and the licence that follows (engine.provenance.Provenance;
        empty for a run written before it was recorded)."""
        return self.run.config.provenance

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | torch.device | None = None) -> "InferenceSession":
        run = open_run(run_dir)
        cfg = run.config
        device, dtype = pick_device(device)

        with torch.device("meta"):
            encoder = ENCODERS.build(cfg.encoder.name, cfg.encoder.config)
        load_ctclip_vision(encoder, run.resolve(cfg.encoder.weights))
        encoder.eval().to(device)

        classifier = AbnormalityHead(cfg.classifier.config)
        load_weights_strict(classifier, run.resolve(cfg.classifier.weights), "classifier")
        classifier.eval().to(device)

        decoder, tokenizer = load_causal_lm(run.resolve(cfg.decoder.path), gguf_file=cfg.decoder.gguf_file, dtype=dtype)
        generator = ReportGenerator(cfg.generator, decoder)
        load_weights_strict(generator.connector, run.resolve(cfg.connector_weights), "connector")
        if cfg.decoder.weights:
            state = load_file(str(run.resolve(cfg.decoder.weights)))
            missing, unexpected = generator.decoder.load_state_dict(state, strict=False)
            if unexpected:
                raise CheckpointError(f"decoder weights hold unknown keys {unexpected[:8]}", run.resolve(cfg.decoder.weights))
        generator.eval().to(device)
        return cls(run, encoder, classifier, generator, tokenizer, device=device, domain_guard=load_domain_guard(run))

    # -- the path, one step at a time ----------------------------------------------------------
    @torch.no_grad()
    def image_features(self, volume: Volume) -> ImageFeatures:
        """Preprocess → encoder latent → classifier logits for one volume."""
        start = time.perf_counter()
        x = preprocess(volume, self.preprocess_config)
        mid = time.perf_counter()
        latent = self.encoder(x.unsqueeze(0).to(self.device))
        logits = self.classifier(latent)
        end = time.perf_counter()
        return ImageFeatures(latent[0].float().cpu(), logits[0].float().cpu(), mid - start, end - mid)

    @torch.no_grad()
    def prefixes(self, latents: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """(B, d_embed) latents [+ (B, n_labels) logits] → (B, prefix_len, d_llm) prefixes."""
        latents = torch.as_tensor(latents, dtype=torch.float32, device=self.device)
        if logits is not None:
            logits = torch.as_tensor(logits, dtype=torch.float32, device=self.device)
        if self.generator.uses_logits and logits is None:
            raise ConfigError(f"variant {self.run.config.variant} needs classifier logits", self.run.root)
        return self.generator.prefix(latents, logits)

    def generate(
        self,
        latents: torch.Tensor,
        logits: torch.Tensor | None,
        settings: GenerationSettings | None = None,
        *,
        on_token: Callable[[list[int]], None] | None = None,
    ) -> GenerationResult:
        """Reports for a batch of cached latents (and logits), e.g. for evaluation."""
        prefix = self.prefixes(latents, logits)
        return generate_from_prefix(
            self.generator.decoder, self.tokenizer, prefix, settings=settings or self.settings, on_token=on_token
        )

    def stream(self, features: ImageFeatures, settings: GenerationSettings | None = None):
        """Pieces of one case's report text as they are generated (greedy), for a UI."""
        prefix = self.prefixes(features.latent[None], features.logits[None])
        yield from stream_from_prefix(self.generator.decoder, self.tokenizer, prefix, settings=settings or self.settings)

    def positives(self, probabilities) -> list[str]:
        """The findings at or above their validation-chosen thresholds, in label-set order."""
        return [n for n, p, t in zip(self.label_set.names, probabilities, self.thresholds) if p >= t]

    # -- is the scan of the kind the run was made for? -------------------------------------------
    @property
    def checks_body_region(self) -> bool:
        guard = self.run.config.domain_guard
        return guard is None or guard.body_region

    def check_domain(self, volume: Volume | None, latent=None, *, body=None) -> DomainCheck:
        """Body region (from the volume; `body` when already computed) and feature distance (from the
        latent, when the run has a guard)."""
        if body is None and volume is not None and self.checks_body_region:
            body = body_region(volume)
        distance = None
        if latent is not None and self.domain_guard is not None:
            distance = float(self.domain_guard.distance(np.asarray(latent, dtype=np.float64).reshape(1, -1))[0])
        threshold = None if self.domain_guard is None else float(self.domain_guard.threshold)
        return DomainCheck(body, distance, threshold)

    # -- one case, end to end ------------------------------------------------------------------
    def report(self, volume: Volume | str | Path, settings: GenerationSettings | None = None, *,
               refuse_outside: bool = False, body=None) -> CaseReport:
        """The case's probabilities and draft. refuse_outside: raise OutOfDomainError (before any
        text is generated) when the scan is outside the run's domain; otherwise the draft is made and
        its `domain` says so. body: the volume's engine.domain.BodyRegion when already computed."""
        start = time.perf_counter()
        if not isinstance(volume, Volume):
            from engine.io import load_volume

            volume = load_volume(volume)
        loaded = time.perf_counter()
        if body is None and self.checks_body_region:
            body = body_region(volume)
        if refuse_outside and body is not None and not body.is_chest:
            raise OutOfDomainError(DomainCheck(body, None, None).message(), volume.source)
        features = self.image_features(volume)
        domain = self.check_domain(None, features.latent, body=body)
        if refuse_outside and not domain.in_domain:
            raise OutOfDomainError(domain.message(), volume.source)
        prefix = self.prefixes(features.latent[None], features.logits[None])
        result = generate_from_prefix(self.generator.decoder, self.tokenizer, prefix, settings=settings or self.settings)
        probs = features.probabilities
        generated = result.reports[0]
        return CaseReport(
            source=volume.source,
            probabilities={name: float(p) for name, p in zip(self.label_set.names, probs)},
            positives=self.positives(probs),
            report=generated.text,
            prefix=prefix[0].float().cpu(),
            n_tokens=generated.n_tokens,
            finished=generated.finished,
            timings={
                "load_s": loaded - start,
                "preprocess_s": features.preprocess_seconds,
                "encode_s": features.encode_seconds,
                "generate_s": result.seconds,
                "total_s": time.perf_counter() - start,
            },
            domain=domain,
        )
