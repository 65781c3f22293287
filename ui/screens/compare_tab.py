"""Compare mode: the chosen case's reports from two or three runs side by side, each with its
highlighted findings, agreement with the reference and time to report."""

from __future__ import annotations

import html
import logging
from collections import deque
from dataclasses import dataclass

import gradio as gr

from study.findings import FindingExtractor
from ui.findings_view import agreement, agreement_html, highlight_html
from ui.reporting import DECODING, report_steps, settings_for
from ui.screens.common import (
    domain_html,
    escaped,
    message,
    ordered_runs,
    provenance_html,
    reference_view,
    run_section,
    session_owner,
)
from ui.screens.demo_status import no_run_hint
from ui.uploads import display_name

log = logging.getLogger("rad3d.app")
MAX_COLUMNS = 3


@dataclass(frozen=True)
class CompareControls:
    runs: gr.CheckboxGroup
    status: gr.Markdown


def build_compare(browser, config, case: gr.Dropdown, builder=None) -> CompareControls:
    """Build the screen; `builder` as in build_review (the runs it finishes join config.runs)."""
    extractor = FindingExtractor(browser.dataset.label_set)
    run_names = ordered_runs(config)  # the method (V-3) first

    def hint(live: bool = True) -> str:
        return no_run_hint(builder.status() if builder else None, bool(config.runs), live)

    gr.Markdown("Reports for the case chosen in **Review**, from up to three runs with the same decoding.")
    with gr.Row():
        runs = gr.CheckboxGroup(run_names, value=run_names[:MAX_COLUMNS], label="Runs (two or three)",
                                elem_id="compare-runs")
        decoding = gr.Radio(list(DECODING), value=DECODING[0], label="Decoding")
        max_tokens = gr.Slider(8, 512, value=200, step=1, label="Max new tokens")
        go = gr.Button("Compare", variant="primary", elem_id="compare")
    status = gr.Markdown("" if run_names else hint(live=False), elem_id="compare-status")
    with gr.Row():
        reference = gr.HTML(elem_id="compare-reference")
        columns = [gr.HTML(elem_id=f"compare-{i}") for i in range(MAX_COLUMNS)]

    def on_compare(name, chosen, decoding_choice, n_tokens, request: gr.Request = None):
        owner = session_owner(request)
        out = [""] * (MAX_COLUMNS + 2)
        if not chosen:
            out[0] = hint() if not config.runs else "Tick two or three runs."
            yield out
            return
        if len(chosen) > MAX_COLUMNS:
            out[0] = f"Tick at most {MAX_COLUMNS} runs."
            yield out
            return
        if not name:
            out[0] = "Choose a case in Review first."
            yield out
            return
        # the reference of the section the runs were trained on (one block per section when they differ)
        sections = list(dict.fromkeys(run_section(config, r) for r in chosen))
        out[1] = "<h4>Reference</h4>" + "".join(reference_view(browser, extractor, name, s)[0] for s in sections)
        for i, run_name in enumerate(chosen):
            out[0] = f"{display_name(name)}: generating with `{run_name}` ({i + 1} of {len(chosen)})…"
            yield out
            title = f"<h4>{html.escape(run_name)}</h4>"
            try:
                session = browser.session(run_name)
                settings = settings_for(session.settings, decoding_choice, n_tokens)
                step = deque(report_steps(session, browser.volume(name, owner), settings), maxlen=1)[0]  # the last
                body = highlight_html(step.text, extractor) if step.text else escaped("(empty report)")
                # as in Review: a scan outside the run's domain and a phantom-only run are marked beside the draft
                body = domain_html(step.domain) + provenance_html(session.provenance) + body
                ref_text, _ = browser.reference(name, session.run.config.report_section)
                if ref_text:
                    body += agreement_html(agreement(step.text, ref_text, extractor))
                positives = ", ".join(session.image.marked(step.positives)) or "none"  # ⚠: weak finding
                body += (f"<p>variant {html.escape(session.run.config.variant)} · time to report "
                         f"{step.timings['total_s']:.1f} s · positives: {html.escape(positives)}</p>")
            except Exception as err:
                log.exception("compare: %s failed", run_name)
                body = f"<p>{html.escape(message(err, 'Report generation'))}</p>"
            out[2 + i] = title + body
        out[0] = f"{display_name(name)}: {len(chosen)} runs compared."
        yield out

    go.click(on_compare, [case, runs, decoding, max_tokens], [status, reference] + columns)
    return CompareControls(runs, status)
