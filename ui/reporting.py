"""One case's report for the page, free of any UI toolkit: the steps of
InferenceSession.report_stream that carry something to show (the probabilities first, so the chart
can show while text is still coming, then the report text piece by piece with greedy decoding or
at once with beam search), in the form the screens read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from engine.generation import GenerationSettings

DECODING = ("greedy", "beam (4)")
# The page is handed a volume already read: reading time is no part of the time to report it shows.
SHOWN_TIMINGS = ("preprocess_s", "encode_s", "generate_s", "total_s")


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
    """Yields once with the image features, then after each text piece (greedy) and last with
    done=True, the whole text and the timings."""
    for step in session.report_stream(volume, settings):
        if step.probabilities is None:  # preprocessing and encoding: nothing to show yet
            continue
        timings = {k: v for k, v in step.timings.items() if k in SHOWN_TIMINGS}
        yield ReportProgress(step.probabilities, step.positives, step.text, step.stage == "done", timings, step.domain)
