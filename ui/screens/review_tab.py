"""Case review: case list with search, finding filter and upload; the three-plane viewer; the
abnormality panel; the generated report (streamed) beside the reference with highlighted findings
and their agreement; above the draft, what the run was trained on and its licence (a warning
banner when it learned from phantoms only)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from study.consistency import check_case
from study.findings import FindingExtractor
from ui.charts import probability_chart
from ui.evidence_view import EvidenceOverlays
from ui.findings_view import agreement, agreement_html, consistency_html, guard_marks_html, highlight_html
from ui.plane_image import png_file
from ui.reporting import DECODING, report_steps, settings_for
from ui.screens.ask_box import build_ask
from ui.screens.common import (
    NO_RUN,
    domain_html,
    escaped,
    message,
    ordered_runs,
    provenance_html,
    reference_view,
    run_section,
    session_owner,
    timing_line,
)
from ui.screens.demo_status import no_run_hint
from ui.uploads import discard_temp_copy, display_name
from ui.viewer import PLANES, WINDOW_PRESETS, clamp_crosshair, render_views
from ui.volume_viewer import ViewerFiles, serve_viewer_files, volume_viewer

log = logging.getLogger("rad3d.app")
DEFAULT_MAX_TOKENS = 200


def run_provenance_html(config, run_name: str | None) -> str:
    """provenance_html of a configured run, read from its config.json (no model is loaded)."""
    from engine.rundir import open_run

    if not run_name or run_name not in config.runs:
        return ""
    try:
        return provenance_html(open_run(config.runs[run_name], check=False).config.provenance)
    except Exception as err:  # a broken run says so where its draft would be, and the page keeps serving
        return escaped(message(err, "Reading the run"))


def _labels_markdown(labels: dict[str, int] | None) -> str:
    if labels is None:
        return ""
    present = [n for n, v in labels.items() if v]
    return "**Reference labels:** " + (", ".join(present) if present else "none of the findings")


@dataclass(frozen=True)
class ReviewControls:
    case: gr.Dropdown  # the chosen case (other screens follow it)
    run: gr.Dropdown
    status: gr.Markdown  # the report status line


def build_review(app: gr.Blocks, browser, config, builder=None) -> ReviewControls:
    """Build the screen. `builder` (a ui.demo_builder.DemoBuilder) is the demo build running in the
    background, if any: its state explains a missing run."""
    extractor = FindingExtractor(browser.dataset.label_set)

    def hint(live: bool = True) -> str:
        return no_run_hint(builder.status() if builder else None, bool(config.runs), live)

    c = _review_screen(browser, config, hint)
    # Events are registered in the page's order (case, viewer, list, report), as Gradio numbers them.
    overlays = EvidenceOverlays(browser)
    views = _wire_case_viewer(app, browser, config, extractor, c, overlays)
    _wire_evidence(config, c, overlays, views)
    _wire_webgl_viewer(app, browser, c)
    _wire_webgl_evidence(browser, c, overlays)
    _wire_case_list(browser, c)
    _wire_report(browser, config, extractor, hint, c)
    build_ask(browser, config, c.case, c.run)  # a multimodal run with the vqa task: questions about the case
    return ReviewControls(c.case, c.run, c.report_status)


# A click on a highlighted finding (a <mark> or a flagged sentence, both with data-finding) in a report
# fires the report's click event with the finding's name (gr.EventData), which jumps the viewers to its
# evidence; a click anywhere else in the text fires nothing.
PICK_JS = """
element.addEventListener("click", (e) => {
  const hit = e.target.closest("[data-finding]");
  if (hit) trigger("click", { finding: hit.dataset.finding });
});
"""


def _review_screen(browser, config, hint) -> SimpleNamespace:
    """The screen's components (wired by the _wire_* functions): case list and viewer above,
    run controls, the draft and the reference below."""
    choices = browser.case_choices()  # (label with the split, name): held-out test cases first
    run_names = ordered_runs(config) or [NO_RUN]  # the method (V-3) is the default
    lung = WINDOW_PRESETS["lung"]
    with gr.Row():
        with gr.Column(scale=1, min_width=250):
            query = gr.Textbox(label="Search cases", placeholder="part of a case name", elem_id="case-search")
            finding = gr.Dropdown(["(any)"] + browser.label_names, value="(any)", label="Labelled finding")
            case = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Case", elem_id="case-select")
            upload = gr.File(label=f"Upload NIfTI (.nii, .nii.gz), MetaImage (.mha), NRRD (.nrrd) or zipped "
                             f"DICOM (.zip), up to {config.max_upload_mb:g} MiB",
                             file_types=[".nii", ".gz", ".zip", ".mha", ".nrrd"],
                             type="filepath", height=110, elem_id="upload")
            upload_status = gr.Markdown(elem_id="upload-status")
        with gr.Column(scale=3):
            # the WebGL viewer (ui/volume_viewer.py) unless --viewer png; the server-drawn planes below
            # are its fallback, shown when the browser has no WebGL2
            webgl = volume_viewer(visible=config.viewer == "webgl") if config.viewer == "webgl" else None
            png_visible = webgl is None
            with gr.Row(visible=png_visible) as png_planes:
                images = [gr.Image(label=p.capitalize(), type="filepath", format="png", interactive=False,
                                   elem_id=f"plane-{p}", buttons=[]) for p in PLANES]
            with gr.Row(visible=png_visible) as png_sliders:
                sliders = {p: gr.Slider(0, 1, value=0, step=1, label=f"{p.capitalize()} slice",
                                        elem_id=f"slider-{p}") for p in PLANES}
            with gr.Row(visible=png_visible) as png_window:
                preset = gr.Radio(list(WINDOW_PRESETS), value="lung", label="Window preset", elem_id="window-preset")
                width = gr.Slider(1, 4000, value=lung[0], step=1, label="Window width (HU)", elem_id="window-width")
                level = gr.Slider(-1200, 1500, value=lung[1], step=1, label="Window level (HU)",
                                  elem_id="window-level")
            with gr.Row():  # the evidence overlay: a finding's map over the planes, its peak one click away
                ev_finding = gr.Dropdown(browser.label_names, value=(browser.label_names or [None])[0],
                                         label="Evidence for", elem_id="evidence-finding")
                opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="evidence-opacity")
                show_ev = gr.Button("Show evidence", elem_id="evidence-show")
                jump_ev = gr.Button("Jump to evidence", elem_id="evidence-jump")
            ev_status = gr.Markdown(elem_id="evidence-status")
            ev_shown = gr.State("")  # the finding whose overlay the planes draw ("" none)
            case_info = gr.Markdown(elem_id="case-info")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            run = gr.Dropdown(run_names, value=run_names[0], label="Run", elem_id="run-select")
            with gr.Row():
                decoding = gr.Radio(list(DECODING), value=DECODING[0], label="Decoding", elem_id="decoding")
                max_tokens = gr.Slider(8, 512, value=DEFAULT_MAX_TOKENS, step=1, label="Max new tokens",
                                       elem_id="max-tokens")
            guarded = gr.Checkbox(False, label="Guarded draft: mark below it each finding the classifier scores "
                                  "confidently against it", elem_id="guarded")
            generate = gr.Button("Generate report", variant="primary", elem_id="generate")
            report_status = gr.Markdown("" if config.runs else hint(live=False), elem_id="report-status")
            chart = gr.Plot(label="Abnormality probabilities", elem_id="probabilities")
        with gr.Column(scale=1):
            gr.Markdown("#### Generated report (draft, not for patient care)")
            provenance = gr.HTML(run_provenance_html(config, run_names[0]), elem_id="run-provenance")
            generated = gr.HTML(elem_id="generated-report", js_on_load=PICK_JS)
            agreement_box = gr.HTML(elem_id="agreement")
            consistency_box = gr.HTML(elem_id="consistency")
            timing = gr.Markdown(elem_id="timing")
        with gr.Column(scale=1):
            gr.Markdown("#### Reference report")
            reference = gr.HTML(elem_id="reference-report", js_on_load=PICK_JS)
            reference_labels = gr.Markdown(elem_id="reference-labels")
    return SimpleNamespace(
        query=query, finding=finding, case=case, upload=upload, upload_status=upload_status, images=images,
        xyz=[sliders["sagittal"], sliders["coronal"], sliders["axial"]],  # slider → x, y, z
        preset=preset, width=width, level=level, case_info=case_info, run=run, decoding=decoding,
        max_tokens=max_tokens, guarded=guarded, consistency=consistency_box,
        generate=generate, report_status=report_status, chart=chart, provenance=provenance,
        generated=generated, agreement_box=agreement_box, timing=timing, reference=reference,
        reference_labels=reference_labels, webgl=webgl, png_rows=[png_planes, png_sliders, png_window],
        ev_finding=ev_finding, opacity=opacity, show_ev=show_ev, jump_ev=jump_ev,
        ev_status=ev_status, ev_shown=ev_shown,
    )


def _wire_case_viewer(app: gr.Blocks, browser, config, extractor, c: SimpleNamespace, overlays):
    """Opening a case (its planes, reference and size) and moving through it: slices and window.
    Returns `views`, the planes' renderer (with the evidence overlay when one is shown)."""
    images, xyz, width, level = c.images, c.xyz, c.width, c.level

    def views(name, x, y, z, w, lv, owner, run_name=None, shown="", opacity=0.5):
        volume = browser.volume(name, owner)
        cross = clamp_crosshair(volume.shape, x, y, z)
        overlay = overlays.shown(run_name, name, owner, shown) if shown else None
        planes = render_views(volume.hu, volume.spacing_mm, cross, max(float(w), 1.0), float(lv),
                              max_side=config.max_side, overlay=overlay.volume_map if overlay else None,
                              opacity=float(opacity))
        return [png_file(image, images[0].GRADIO_CACHE) for image in planes]

    def on_case(name, w, lv, run_name=None, request: gr.Request = None):
        owner = session_owner(request)
        blank = [None] * 3 + [gr.Slider()] * 3 + ["", "", "", None, "", "", ""]
        if not name:
            return blank
        try:
            volume = browser.volume(name, owner)
            ref_html, labels = reference_view(browser, extractor, name, run_section(config, run_name))
        except Exception as err:  # a bad file in the dataset, another session's upload: say so, keep serving
            log.warning("cannot open case %s: %s", name, err)
            blank[8] = message(err, f"Opening {display_name(name)}")
            return blank
        centre = [n // 2 for n in volume.shape]
        new_sliders = [gr.Slider(minimum=0, maximum=n - 1, value=mid) for n, mid in zip(volume.shape, centre)]
        sx, sy, sz = volume.spacing_mm
        info = (f"**{display_name(name)}**: {volume.shape[0]}×{volume.shape[1]}×{volume.shape[2]} voxels of "
                f"{sx:.2f}×{sy:.2f}×{sz:.2f} mm")
        return (views(name, *centre, w, lv, owner) + new_sliders
                + [ref_html, _labels_markdown(labels), info, None, "", "", ""])

    case_outputs = images + xyz + [c.reference, c.reference_labels, c.case_info, c.chart, c.generated,
                                   c.agreement_box, c.timing]
    c.case.change(on_case, [c.case, width, level, c.run], case_outputs)
    app.load(on_case, [c.case, width, level, c.run], case_outputs)

    def on_view(name, x, y, z, w, lv, run_name=None, shown="", opacity=0.5, request: gr.Request = None):
        if not name:
            return [None] * 3
        try:
            return views(name, x, y, z, w, lv, session_owner(request), run_name, shown, opacity)
        except Exception as err:
            raise gr.Error(message(err, "Drawing the planes")) from None

    shown = [c.run, c.ev_shown, c.opacity]
    for control in xyz + [width, level, c.opacity]:
        control.input(on_view, [c.case] + xyz + [width, level] + shown, images, show_progress="hidden",
                      trigger_mode="always_last")

    def on_preset(p, name, x, y, z, run_name=None, ev_shown="", opacity=0.5, request: gr.Request = None):
        w, lv = WINDOW_PRESETS[p]
        return [w, lv] + (on_view(name, x, y, z, w, lv, run_name, ev_shown, opacity, request))

    c.preset.input(on_preset, [c.preset, c.case] + xyz + shown, [width, level] + images, show_progress="hidden")
    return views


def _wire_evidence(config, c: SimpleNamespace, overlays, views) -> None:
    """"Show evidence" lays the chosen finding's map over the planes (computed on demand, cached);
    "Jump to evidence" also moves the crosshair to its peak."""
    def evidence(name, run_name, finding, owner, progress):
        if run_name == NO_RUN or run_name not in config.runs:
            raise gr.Error("Choose a run: the evidence map comes from its image model")
        if not name or not finding:
            raise gr.Error("Choose a case and a finding first")
        progress(0.1, desc=f"Evidence for {finding}…")
        overlay = overlays.compute(run_name, name, owner, finding)
        weak = " ⚠ the classifier is weak on this finding" if overlays.browser.session(run_name).image.is_weak(
            finding) else ""
        x, y, z = overlay.peak
        status = (f"Evidence for **{finding}** ({overlay.method}, logit {overlay.logit:.2f}): peak at voxel "
                  f"({x}, {y}, {z}), axial slice {z}.{weak}")
        return overlay, status

    def on_show(name, run_name, finding, x, y, z, w, lv, opacity, request: gr.Request = None,
                progress=gr.Progress()):  # noqa: B008 (Gradio finds its tracker by this default)
        owner = session_owner(request)
        try:
            _, status = evidence(name, run_name, finding, owner, progress)
            return views(name, x, y, z, w, lv, owner, run_name, finding, opacity) + [finding, status]
        except gr.Error:
            raise
        except Exception as err:
            raise gr.Error(message(err, "Evidence map")) from None

    def on_jump(name, run_name, finding, w, lv, opacity, request: gr.Request = None,
                progress=gr.Progress()):  # noqa: B008 (Gradio finds its tracker by this default)
        owner = session_owner(request)
        try:
            overlay, status = evidence(name, run_name, finding, owner, progress)
            return (views(name, *overlay.peak, w, lv, owner, run_name, finding, opacity) + list(overlay.peak)
                    + [finding, status])
        except gr.Error:
            raise
        except Exception as err:
            raise gr.Error(message(err, "Evidence map")) from None

    def on_pick(name, run_name, w, lv, opacity, evt: gr.EventData, request: gr.Request = None,
                progress=gr.Progress()):  # noqa: B008 (Gradio finds its tracker by this default)
        finding = getattr(evt, "finding", None)
        if finding not in overlays.browser.label_names:
            raise gr.Error(f"{finding!r} is not a finding of this dataset's label set")
        return [finding] + on_jump(name, run_name, finding, w, lv, opacity, request, progress)

    # the events are kept: the WebGL viewer follows each once it succeeded (_wire_webgl_evidence)
    jump_outputs = c.images + c.xyz + [c.ev_shown, c.ev_status]
    c.ev_events = (
        c.show_ev.click(on_show, [c.case, c.run, c.ev_finding] + c.xyz + [c.width, c.level, c.opacity],
                        c.images + [c.ev_shown, c.ev_status]),
        c.jump_ev.click(on_jump, [c.case, c.run, c.ev_finding, c.width, c.level, c.opacity], jump_outputs),
        *(report.click(on_pick, [c.case, c.run, c.width, c.level, c.opacity], [c.ev_finding] + jump_outputs)
          for report in (c.generated, c.reference)))


def _wire_webgl_viewer(app: gr.Blocks, browser, c: SimpleNamespace) -> None:
    """The WebGL viewer gets the chosen case's volume (one download per case); a browser without
    WebGL2 gets the server-drawn planes instead. Others show an overlay with
    `c.viewer_files.value(volume, name, overlay=map, jump=(x, y, z))` returned to `c.webgl`."""
    c.viewer_files = None
    if c.webgl is None:
        return
    c.viewer_files = files = serve_viewer_files(ViewerFiles())

    def on_case_volume(name, request: gr.Request = None):
        if not name:
            return ""
        try:
            return files.value(browser.volume(name, session_owner(request)), display_name(name))
        except Exception as err:  # the planes' handler says why in the page; the viewer stays empty
            log.warning("cannot show case %s in the WebGL viewer: %s", name, err)
            return ""

    c.case.change(on_case_volume, [c.case], [c.webgl])
    app.load(on_case_volume, [c.case], [c.webgl])
    c.webgl.nowebgl(lambda: [gr.HTML(visible=False)] + [gr.Row(visible=True)] * len(c.png_rows), None,
                    [c.webgl] + c.png_rows)


def _wire_webgl_evidence(browser, c: SimpleNamespace, overlays) -> None:
    """The evidence controls drive the WebGL viewer too: after "Show evidence" (or a new opacity) it gets
    the shown finding's map in the slider's opacity, after "Jump to evidence" also the peak for its
    crosshair. The map was computed by the planes' handler just before (taken from memory here), and
    the value names the case's volume file already in the page, so only the overlay is downloaded,
    once per map; a jump or a new opacity downloads nothing."""
    if c.webgl is None:
        return
    files = c.viewer_files

    def webgl_value(name, run_name, shown, opacity, owner, jump: bool):
        overlay = overlays.shown(run_name, name, owner, shown) if name and shown else None
        if overlay is None:  # nothing shown (or shown by another session's process state): leave it
            return gr.HTML()
        value = json.loads(files.value(browser.volume(name, owner), display_name(name), overlay=overlay.volume_map,
                                       opacity=float(opacity), jump=overlay.peak if jump else None))
        value["asked"] = time.time_ns()  # a second jump to the same peak is a new value: the page moves again
        return json.dumps(value)

    def on_show_webgl(name, run_name, shown, opacity, request: gr.Request = None):
        return webgl_value(name, run_name, shown, opacity, session_owner(request), jump=False)

    def on_jump_webgl(name, run_name, shown, opacity, request: gr.Request = None):
        return webgl_value(name, run_name, shown, opacity, session_owner(request), jump=True)

    inputs = [c.case, c.run, c.ev_shown, c.opacity]
    show, *jumps = c.ev_events
    show.success(on_show_webgl, inputs, [c.webgl], show_progress="hidden")
    for jump in jumps:  # the button and a click on a finding in a report
        jump.success(on_jump_webgl, inputs, [c.webgl], show_progress="hidden")
    c.opacity.input(on_show_webgl, inputs, [c.webgl], show_progress="hidden", trigger_mode="always_last")


def _wire_case_list(browser, c: SimpleNamespace) -> None:
    """Filtering the case list and adding an upload to it (the upload becomes the chosen case)."""

    def on_filter(q, f, request: gr.Request = None):
        found = browser.case_choices(q, f, session_owner(request))
        return gr.Dropdown(choices=found, value=found[0][1] if found else None)

    c.query.change(on_filter, [c.query, c.finding], [c.case])
    c.finding.change(on_filter, [c.query, c.finding], [c.case])

    def on_upload(path, request: gr.Request = None):
        if not path:
            return gr.Dropdown(), ""
        owner = session_owner(request)
        client_name = Path(path).name  # gradio keeps the client's file name as the last component
        try:
            key = browser.add_upload(path, client_name, owner)
        except Exception as err:
            log.warning("upload refused: %s", err)
            return gr.Dropdown(), message(err, "Upload")
        finally:  # gradio's own copy: not needed once kept in the area, or refused
            discard_temp_copy(path, c.upload.GRADIO_CACHE)
        return (gr.Dropdown(choices=browser.case_choices(owner=owner), value=key),
                f"Uploaded {display_name(key)}: it is now the chosen case.")

    c.upload.upload(on_upload, [c.upload], [c.case, c.upload_status])


def _wire_report(browser, config, extractor, hint, c: SimpleNamespace) -> None:
    """The run's provenance, and the report streamed into the chart, the draft and its agreement."""
    def on_run(run_name, name, request: gr.Request = None):  # the reference shows the section this run writes
        ref = reference_view(browser, extractor, name, run_section(config, run_name))[0] if name else ""
        return run_provenance_html(config, run_name), ref

    c.run.change(on_run, [c.run, c.case], [c.provenance, c.reference])
    c.case.change(lambda _: "", [c.case], [c.consistency])  # another case: the last draft's check goes with it

    def on_generate(name, run_name, decoding_choice, n_tokens, guarded, request: gr.Request = None):
        outputs = [gr.Plot(), gr.HTML(), gr.HTML(), gr.Markdown(), gr.Markdown(), gr.HTML(), gr.HTML(), gr.HTML()]
        if run_name == NO_RUN or not config.runs:
            outputs[4] = hint()
            yield outputs
            return
        if not name:
            outputs[4] = "Choose a case first."
            yield outputs
            return
        try:
            outputs[4] = f"Loading run `{run_name}` and encoding the volume…"
            yield outputs
            session = browser.session(run_name)
            outputs[6] = provenance_html(session.provenance)  # beside this very draft, whatever the list showed
            volume = browser.volume(name, session_owner(request))
            ref_text, labels = browser.reference(name, session.run.config.report_section)
            settings = settings_for(session.settings, decoding_choice, n_tokens)
            image = session.image
            thresholds = dict(zip(image.label_set.names, image.thresholds.tolist()))
            for step in report_steps(session, volume, settings):
                outputs[0] = probability_chart(step.probabilities, thresholds, labels, image.valid_auroc)
                outputs[1] = escaped(step.text)
                outside = domain_html(step.domain)
                outputs[6] = outside + provenance_html(session.provenance)
                outputs[4] = ("**Positives:** " + (", ".join(image.marked(step.positives))
                                                   or "none")) + ("" if step.done else " · generating…")
                if step.done:
                    checks = _consistency(step, image, config)
                    outputs[1] = (highlight_html(step.text, extractor, checks) if step.text else escaped("(empty report)"))
                    outputs[1] += guard_marks_html(checks) if guarded else ""
                    outputs[7] = consistency_html(checks)
                    if outside:  # the draft itself carries the mark, not only the banner beside it
                        outputs[1] = ("<p><b>[OUTSIDE THE MODEL'S DOMAIN — not a report of this scan]</b></p>"
                                      + outputs[1])
                    outputs[2] = agreement_html(agreement(step.text, ref_text, extractor)) if ref_text else ""
                    outputs[3] = timing_line(step.timings, len(step.text.split()), run_name,
                                             session.run.config.variant)
                    outputs[5] = reference_view(browser, extractor, name, session.run.config.report_section)[0]
                yield outputs
        except Exception as err:  # a missing run, a failed generation: say so, keep serving others
            log.exception("generation failed for %s with %s", name, run_name)
            outputs[4] = message(err, "Report generation")
            yield outputs

    c.generate.click(on_generate, [c.case, c.run, c.decoding, c.max_tokens, c.guarded],
                     [c.chart, c.generated, c.agreement_box, c.timing, c.report_status, c.reference, c.provenance,
                      c.consistency])


def _consistency(step, image, config):
    """The finished draft's statements beside the classifier's scores (study.consistency's rule and the
    app's settings)."""
    settings = config.consistency
    return check_case(step.text, list(step.probabilities.values()), image.thresholds,
                      FindingExtractor(image.label_set), valid_auroc=image.valid_auroc, config=settings)
