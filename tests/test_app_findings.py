"""Findings in the page: highlighted mentions with their status, escaped text, and the agreement
row of a generated report with the reference."""

from __future__ import annotations

import re

from study.findings import FindingExtractor
from ui.findings_view import Agreement, agreement, agreement_html, highlight_html

EXTRACTOR = FindingExtractor()


def marks(html_text: str) -> list[tuple[str, str, str]]:
    """(status class, finding from the title, marked text) of every <mark>."""
    return re.findall(r'<mark class="finding (\w+)"[^>]*title="([^:"]+): [^"]*">([^<]*)</mark>', html_text)


def test_mentions_are_marked_with_their_status():
    text = "Cardiomegaly is present. No pleural effusion.\nPossible lung nodules in the right upper lobe."
    out = highlight_html(text, EXTRACTOR)
    assert marks(out) == [("positive", "Cardiomegaly", "Cardiomegaly"),
                          ("negative", "Pleural effusion", "pleural effusion"),
                          ("uncertain", "Lung nodule", "lung nodules")]
    assert re.sub(r"<[^>]+>", "", out.replace("<br>", "\n")) == text  # nothing else changed


def test_report_text_is_escaped():
    out = highlight_html("<script>alert(1)</script> Emphysema & atelectasis.", EXTRACTOR)
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp;" in out
    assert [m[1] for m in marks(out)] == ["Emphysema", "Atelectasis"]


def test_agreement_counts_matches_omissions_and_hallucinations():
    generated = "Cardiomegaly is present. A lung nodule is seen. Possible pleural effusion."
    reference = "No cardiomegaly. Pleural effusion on the left. Lung nodule noted. Emphysema."
    rows = agreement(generated, reference, EXTRACTOR)
    assert rows == [Agreement("Cardiomegaly", "hallucination"), Agreement("Emphysema", "omission"),
                    Agreement("Lung nodule", "match"), Agreement("Pleural effusion", "omission")]
    html_text = agreement_html(rows)
    assert "match 1 · omission 2 · hallucination 1" in html_text
    assert agreement("No effusion.", "Normal study.", EXTRACTOR) == []
    assert "No finding" in agreement_html([])
