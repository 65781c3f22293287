"""Findings in report text for the page: highlighted mentions and the per-finding agreement of a
generated report with the reference (match / omission / hallucination), both from
study.findings.FindingExtractor so the page and the evaluation read reports the same way."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from study.consistency import flag_line
from study.findings import FindingExtractor, FindingStatus

# Background colour per mention status.
STATUS_COLOURS = {
    FindingStatus.POSITIVE: "#ffd6d6",
    FindingStatus.UNCERTAIN: "#fff1c2",
    FindingStatus.NEGATIVE: "#d9ecff",
}
FLAG_STYLE = "outline:2px solid #c62828;background:#fff0f0;border-radius:3px"
AGREEMENT_COLOURS = {"match": "#2e7d32", "omission": "#e67e22", "hallucination": "#c62828"}


def highlight_html(text: str, extractor: FindingExtractor, checks=None) -> str:
    """The report as HTML with every finding mention wrapped in <mark> (colour = its status;
    hover shows the finding and status). `checks` (study.consistency.check_case): each sentence that
    disagrees with a confident classifier score is outlined and says why on hover."""
    flagged = sorted({c.span: c for c in checks or () if c.disagreement and c.span}.items())
    if not flagged:
        return f'<div class="report-text">{_highlight_body(text, extractor)}</div>'
    out, pos = [], 0
    for (start, end), c in flagged:
        if start < pos:
            continue  # one sentence flagged for two findings: outlined once
        why = html.escape(flag_line(c), quote=True)
        out += [_highlight_body(text[pos:start], extractor),
                f'<span class="consistency-flag" data-finding="{html.escape(c.finding, quote=True)}" title="{why}" '
                f'style="{FLAG_STYLE}">⚑ {_highlight_body(text[start:end], extractor)}</span>']
        pos = end
    out.append(_highlight_body(text[pos:], extractor))
    return f'<div class="report-text">{"".join(out)}</div>'


def _highlight_body(text: str, extractor: FindingExtractor) -> str:
    escaped = html.escape(text or "")
    spans: list[tuple[int, int, str]] = []
    for m in extractor.mentions(text or ""):
        words = [re.escape(html.escape(w)) for w in m.phrase.split()]
        # the phrase is the text's own tokens, lower-cased; between them any non-word characters
        pattern = re.compile(r"\b" + r"[\W_]+".join(words) + r"\b", re.IGNORECASE)
        for hit in pattern.finditer(escaped):
            if not any(s < hit.end() and hit.start() < e for s, e, _ in spans):
                colour = STATUS_COLOURS.get(m.status, "#eee")
                title = html.escape(f"{m.finding}: {m.status.value}", quote=True)
                spans.append((hit.start(), hit.end(),
                              f'<mark class="finding {m.status.name.lower()}" style="background:{colour}" '
                              f'data-finding="{html.escape(m.finding, quote=True)}" '
                              f'title="{title}">{hit.group(0)}</mark>'))
                break
    out, pos = [], 0
    for start, end, marked in sorted(spans):
        out += [escaped[pos:start], marked]
        pos = end
    out.append(escaped[pos:])
    return "".join(out).replace("\n", "<br>")


def guard_marks_html(checks) -> str:
    """The guarded mode's marks, to show below the draft (the draft itself unchanged)."""
    marks = "".join(f'<div class="guard-mark" style="{FLAG_STYLE};margin:2px 0">{html.escape(c.mark())}</div>'
                    for c in checks or () if c.disagreement)
    return f'<div class="guard-marks">{marks}</div>' if marks else ""


def consistency_html(checks) -> str:
    """Each finding's statement in the draft beside the classifier's probability and threshold, the
    disagreements first and flagged."""
    if not checks:
        return ""
    flags = [c for c in checks if c.disagreement]
    head = (f'<b>Report vs classifier:</b> {len(flags)} finding(s) flagged' if flags
            else "<b>Report vs classifier:</b> no disagreement with a confident score")
    rows = "".join(
        f'<tr class="{"flagged" if c.disagreement else ""}"><td>{"⚑ " if c.disagreement else ""}{html.escape(c.finding)}'
        f'</td><td>{c.statement.value}</td><td>{c.probability:.2f}</td><td>{c.threshold:.2f}</td>'
        f'<td>{c.confidence}</td><td>{c.disagreement or ""}</td></tr>'
        for c in sorted(checks, key=lambda c: c.disagreement is None))
    table = ('<table class="consistency-table" style="font-size:0.85em"><tr><th>finding</th><th>draft says</th>'
             f'<th>p</th><th>threshold</th><th>classifier</th><th>flag</th></tr>{rows}</table>')
    return f'<div class="consistency">{head}<details><summary>per finding</summary>{table}</details></div>'


@dataclass(frozen=True)
class Agreement:
    finding: str
    kind: str  # "match" | "omission" | "hallucination"


def agreement(generated: str, reference: str, extractor: FindingExtractor) -> list[Agreement]:
    """Per finding: positive in both → match; positive in the reference only → omission;
    positive in the generated report only → hallucination (uncertain counts as not positive).
    Findings positive in neither are left out."""
    gen, ref = extractor.extract(generated or ""), extractor.extract(reference or "")
    out = []
    for name in extractor.label_set.names:
        g, r = gen[name] == FindingStatus.POSITIVE, ref[name] == FindingStatus.POSITIVE
        if g and r:
            out.append(Agreement(name, "match"))
        elif r:
            out.append(Agreement(name, "omission"))
        elif g:
            out.append(Agreement(name, "hallucination"))
    return out


def agreement_html(rows: list[Agreement]) -> str:
    if not rows:
        return '<div class="agreement">No finding is reported positive in either text.</div>'
    counts = {k: sum(r.kind == k for r in rows) for k in AGREEMENT_COLOURS}
    chips = "".join(
        f'<span class="chip {r.kind}" style="border:1px solid {AGREEMENT_COLOURS[r.kind]};'
        f'color:{AGREEMENT_COLOURS[r.kind]};border-radius:10px;padding:1px 7px;margin:2px;display:inline-block">'
        f'{html.escape(r.finding)}: {r.kind}</span>'
        for r in rows
    )
    summary = " · ".join(f"{k} {n}" for k, n in counts.items())
    return f'<div class="agreement"><b>Agreement:</b> {summary}<br>{chips}</div>'
