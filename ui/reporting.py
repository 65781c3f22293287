"""Generating one case's report for the page, step by step, free of any UI toolkit: image
features first (so the probability chart can show while text is still coming), then the report
text piece by piece (greedy, InferenceSession.stream) or at once (beam search)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterator

from engine.generation import GenerationSettings

DECODING = ("greedy", "beam (4)")


def settings_for(base: GenerationSettings, decoding: str, max_new_tokens: int) -> GenerationSettings:
    """The run's own settings with the page's choice of decoding and length."""
    beams = 4 if decoding.startswith("beam") else 1
    return replace(base, num_beams=beams, max_new_tokens=int(max_new_tokens))


@dataclass
class ReportProgress:
    probabilities: dict[str, float]
    positives: list[str]
    text: str = ""
    done: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    domain: object = None  # engine.domain.DomainCheck: is the scan of the kind the run was made for?


def report_steps(session, volume, settings: GenerationSettings) -> Iterator[ReportProgress]:
    """Yields once after the image features, then after each text piece (greedy) or once with the
    whole text (beam), and last with done=True and the timings."""
    start = time.perf_counter()
    features = session.image_features(volume)
    probs = features.probabilities
    names = session.label_set.names
    progress = ReportProgress(
        probabilities={n: float(p) for n, p in zip(names, probs)},
        positives=session.positives(probs),
        timings={"preprocess_s": features.preprocess_seconds, "encode_s": features.encode_seconds},
        domain=session.check_domain(volume, features.latent),
    )
    yield progress
    generate_start = time.perf_counter()
    if settings.num_beams == 1:
        for piece in session.stream(features, settings):
            progress.text += piece
            yield progress
    else:
        result = session.generate(features.latent[None], features.logits[None], settings)
        progress.text = result.reports[0].text
    progress.text = progress.text.strip()
    progress.timings["generate_s"] = time.perf_counter() - generate_start
    progress.timings["total_s"] = time.perf_counter() - start
    progress.done = True
    yield progress
