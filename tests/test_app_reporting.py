"""The page's report generation on the tiny test run: features first, then text piece by piece
(greedy) adding up to what batch generation writes; beam search in one piece; timings."""

from __future__ import annotations

import numpy as np
import pytest

from engine.inference import InferenceSession
from run_fixtures import chest_like_volume  # noqa: F401
from ui.reporting import report_steps, settings_for


@pytest.fixture(scope="module")
def session(tiny_run):  # noqa: F811
    return InferenceSession.load(tiny_run[0], device="cpu")


def test_greedy_streams_the_same_report_as_batch_generation(session):
    volume = chest_like_volume(2)
    settings = settings_for(session.settings, "greedy", 30)
    assert settings.num_beams == 1 and settings.max_new_tokens == 30
    steps = [(s.text, s.done) for s in report_steps(session, volume, settings)]
    last = list(report_steps(session, volume, settings))[-1]
    assert steps[0] == ("", False)  # the probabilities come before any text
    assert len(steps) > 3 and steps[-1][1] and not any(done for _, done in steps[:-1])
    texts = [t for t, _ in steps[1:-1]]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # text only grows
    expected = session.report(volume, settings)
    assert last.text == expected.report
    np.testing.assert_allclose(list(last.probabilities.values()), list(expected.probabilities.values()), atol=1e-6)
    assert last.positives == expected.positives
    assert set(last.timings) == {"preprocess_s", "encode_s", "generate_s", "total_s"}
    assert last.timings["total_s"] >= last.timings["generate_s"] > 0


def test_beam_search_gives_its_text_in_one_piece(session):
    volume = chest_like_volume(3)
    settings = settings_for(session.settings, "beam (4)", 16)
    assert settings.num_beams == 4
    steps = list(report_steps(session, volume, settings))
    assert len(steps) == 2 and steps[-1].done
    assert steps[-1].text == session.report(volume, settings).report
