"""`InferenceSession`: the one object the app and the CLI call. Loaded from a run directory, it
takes a volume (or a path) and returns the label probabilities, the generated report, the prefix
and timings, as a stream of progress steps (`report_stream`: the app shows each) or at once
(`report`: the same stream run to its end); it also generates from cached latents in batches
(evaluation). Its image model is an engine.image_model.ImageModel.

Device: CUDA with bf16 when present (the decoder in bf16, the encoder in fp32), otherwise the CPU in
fp32 (bf16 is far slower than fp32 on CPUs without bf16 units).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.decoders import load_causal_lm
from engine.domain import DomainCheck, body_region
from engine.errors import ConfigError, OutOfDomainError
from engine.generation import GenerationResult, GenerationSettings, generate_from_prefix
from engine.image_model import ImageModel, open_image_model
from engine.model import ReportGenerator
from engine.rundir import RunDir, load_domain_guard, open_run
from engine.volume import Volume
from engine.weights import load_weights_strict


def pick_device(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """(device, decoder dtype): the given device, else CUDA with bf16 when present, else CPU fp32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    return device, (torch.bfloat16 if device.type == "cuda" else torch.float32)


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


# The steps of one case's report, in order; "text" repeats as greedy decoding streams (beam search
# has none: its text comes whole with "done").
REPORT_STAGES = ("preprocess", "encode", "classify", "text", "done")


@dataclass(frozen=True)
class ReportStep:
    stage: str  # one of REPORT_STAGES
    timings: dict[str, float]  # the stages finished so far
    probabilities: dict[str, float] | None = None  # from "classify" on
    positives: list[str] | None = None
    domain: DomainCheck | None = None
    text: str = ""  # the report text so far
    case: CaseReport | None = None  # the finished case, on "done" only


class InferenceSession:
    def __init__(self, run: RunDir, image: ImageModel, generator: ReportGenerator, tokenizer, *,
                 device: torch.device, domain_guard=None):
        self.run = run
        self.image = image
        self.generator = generator
        self.tokenizer = tokenizer
        self.device = device
        self.domain_guard = domain_guard  # engine.domain.FeatureGuard, or None (a run made before guards)
        self.settings = run.config.generation

    # The image model's parts and reading, for the session's callers.
    encoder = property(lambda self: self.image.encoder)
    classifier = property(lambda self: self.image.classifier)
    label_set = property(lambda self: self.image.label_set)
    preprocess_config = property(lambda self: self.image.preprocess_config)
    thresholds = property(lambda self: self.image.thresholds)
    valid_auroc = property(lambda self: self.image.valid_auroc)

    @property
    def provenance(self):
        """What the run was made from and the licence that follows (engine.provenance.Provenance;
        empty for a run written before it was recorded)."""
        return self.run.config.provenance

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | torch.device | None = None) -> InferenceSession:
        from engine.multimodal_run import is_multimodal_run

        if is_multimodal_run(run_dir):  # the other system's run: one line, before any model loads
            raise ConfigError("a multimodal (image-token + LoRA) run: load it with "
                              "engine.multimodal_session.MultimodalSession; rad3d ask and rad3d report take it", run_dir)
        run = open_run(run_dir)
        cfg = run.config
        device, dtype = pick_device(device)
        image = open_image_model(run.root, device=device)
        decoder, tokenizer = load_causal_lm(run.resolve(cfg.decoder.path), gguf_file=cfg.decoder.gguf_file, dtype=dtype)
        generator = ReportGenerator(cfg.generator, decoder)
        load_weights_strict(generator.connector, run.resolve(cfg.connector_weights), "connector")
        if cfg.decoder.weights:  # only the trained part of the decoder (V-1, baseline, LoRA) is stored
            load_weights_strict(generator.decoder, run.resolve(cfg.decoder.weights), "decoder", partial=True)
        generator.eval().to(device)
        return cls(run, image, generator, tokenizer, device=device, domain_guard=load_domain_guard(run))

    # -- the language side ---------------------------------------------------------------------
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
        """The case's probabilities and draft: `report_stream` run to its end."""
        last = deque(self.report_stream(volume, settings, refuse_outside=refuse_outside, body=body), maxlen=1)
        return last[0].case

    def report_stream(self, volume: Volume | str | Path, settings: GenerationSettings | None = None, *,
                      refuse_outside: bool = False, body=None) -> Iterator[ReportStep]:
        """One case's report as progress steps (REPORT_STAGES): after preprocessing, encoding, and
        classification with the domain check (probabilities and positives known), then the text as
        greedy decoding writes it, last "done" with the CaseReport. refuse_outside: raise
        OutOfDomainError (before any text is generated) when the scan is outside the run's domain;
        otherwise the draft is made and its `domain` says so. body: the volume's
        engine.domain.BodyRegion when already computed."""
        settings = settings or self.settings
        start = time.perf_counter()
        if not isinstance(volume, Volume):
            from engine.io import load_volume

            volume = load_volume(volume)
        timings = {"load_s": time.perf_counter() - start}
        if body is None and self.checks_body_region:
            body = body_region(volume)
        if refuse_outside and body is not None and not body.is_chest:
            raise OutOfDomainError(DomainCheck(body, None, None).message(), volume.source)
        for stage, seconds, features in self.image.stages(volume):
            if features is None:
                timings[f"{stage}_s"] = seconds
                yield ReportStep(stage, dict(timings))
        timings["encode_s"] = features.encode_seconds  # the classifier's moment counts as encoding
        domain = self.check_domain(None, features.latent, body=body)
        if refuse_outside and not domain.in_domain:
            raise OutOfDomainError(domain.message(), volume.source)
        probs = features.probabilities
        step = ReportStep("classify", dict(timings), self.image.by_name(probs), self.image.positives(probs), domain)
        yield step
        prefix = self.prefixes(features.latent[None], features.logits[None])
        for item in self._text_stream(prefix, settings):
            if isinstance(item, str):
                yield dataclasses.replace(step, stage="text", text=item)
            else:
                result = item
        generated = result.reports[0]
        timings.update(generate_s=result.seconds, total_s=time.perf_counter() - start)
        case = CaseReport(volume.source, step.probabilities, step.positives, generated.text, prefix[0].float().cpu(),
                          generated.n_tokens, generated.finished, timings, domain)
        yield dataclasses.replace(step, stage="done", timings=dict(timings), text=generated.text, case=case)

    def _text_stream(self, prefix: torch.Tensor, settings: GenerationSettings) -> Iterator[str | GenerationResult]:
        """The report text so far after each greedy token (whenever it grows), then the
        GenerationResult; beam search gives only the result. Generation runs in a worker thread
        that hands each new token over, so the text streams from the very call that writes it."""
        if settings.num_beams > 1:
            yield generate_from_prefix(self.generator.decoder, self.tokenizer, prefix, settings=settings)
            return
        tokens: queue.Queue = queue.Queue()
        outcome: dict = {}

        def run():
            try:
                outcome["result"] = generate_from_prefix(self.generator.decoder, self.tokenizer, prefix,
                                                         settings=settings, on_token=tokens.put)
            except Exception as err:  # re-raised in the caller's thread
                outcome["error"] = err
            finally:
                tokens.put(None)

        threading.Thread(target=run, daemon=True).start()
        ids: list[int] = []
        text = now = ""
        while (new := tokens.get()) is not None:
            ids += new
            now = self.tokenizer.decode(ids, skip_special_tokens=True)
            if now != text and not now.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                text = now
                yield text
        if "error" in outcome:
            raise outcome["error"]
        if now != text:  # the tail held back above
            yield now
        yield outcome["result"]
