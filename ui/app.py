"""The Gradio app: a case list, a three-plane CT viewer, the reference report and, when a run is
loaded, the finding probabilities and the generated report beside the reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from engine.errors import Rad3dError
from ui.charts import probability_chart
from ui.viewer import PLANE_AXIS, PLANES, WINDOW_PRESETS, Crosshair, render_plane
from ui.volumes import VolumeStore

log = logging.getLogger("rad3d.app")
NO_RUN = "(none)"


@dataclass
class AppConfig:
    data_dir: Path
    runs: dict[str, Path] = field(default_factory=dict)  # shown name → run directory
    max_side: int = 420  # displayed plane size in pixels


class CaseBrowser:
    """The dataset and everything loaded from it, shared by all browser sessions."""

    def __init__(self, config: AppConfig):
        from engine.data import CTRateDataset

        self.config = config
        self.dataset = CTRateDataset.open(config.data_dir)
        self.volumes = VolumeStore(self.dataset.load_volume)
        self._sessions: dict[str, object] = {}

    def case_names(self, query: str = "", finding: str | None = None) -> list[str]:
        names = []
        for case in self.dataset.cases:
            if query and query.lower() not in case.volume_name.lower():
                continue
            if finding and finding != "(any)" and case.labels is not None:
                if not case.labels[self.dataset.label_set.index(finding)]:
                    continue
            names.append(case.volume_name)
        return names

    def session(self, run_name: str):
        from engine.inference import InferenceSession

        if run_name not in self._sessions:
            self._sessions[run_name] = InferenceSession.load(self.config.runs[run_name])
        return self._sessions[run_name]


def _render_all(browser: CaseBrowser, name: str, x: int, y: int, z: int, width: float, level: float):
    volume = browser.volumes.get(name)
    shape = volume.shape
    cross = Crosshair(min(int(x), shape[0] - 1), min(int(y), shape[1] - 1), min(int(z), shape[2] - 1))
    return [
        render_plane(volume.hu, volume.spacing_mm, plane, cross, width, level, max_side=browser.config.max_side)
        for plane in PLANES
    ]


def build_app(config: AppConfig) -> gr.Blocks:
    browser = CaseBrowser(config)
    label_names = list(browser.dataset.label_set.names)
    first = browser.dataset.cases[0].volume_name if browser.dataset.cases else None
    run_names = list(config.runs) or [NO_RUN]

    with gr.Blocks(title="rad3d") as app:
        gr.Markdown("## rad3d: draft reports from chest CT\nResearch software: drafts are not for patient care.")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                query = gr.Textbox(label="Search cases", placeholder="part of a VolumeName")
                finding = gr.Dropdown(["(any)"] + label_names, value="(any)", label="Labelled finding")
                case = gr.Dropdown(browser.case_names(), value=first, label="Case", elem_id="case-select")
                preset = gr.Radio(list(WINDOW_PRESETS), value="lung", label="Window preset", elem_id="window-preset")
                width = gr.Slider(1, 4000, value=WINDOW_PRESETS["lung"][0], step=1, label="Window width (HU)")
                level = gr.Slider(-1200, 1500, value=WINDOW_PRESETS["lung"][1], step=1, label="Window level (HU)")
            with gr.Column(scale=3):
                with gr.Row():
                    images = [gr.Image(label=p.capitalize(), type="pil", interactive=False, elem_id=f"plane-{p}")
                              for p in PLANES]
                with gr.Row():
                    sliders = {p: gr.Slider(0, 1, value=0, step=1, label=f"{p.capitalize()} slice", elem_id=f"slider-{p}")
                               for p in PLANES}
        with gr.Row():
            with gr.Column():
                run = gr.Dropdown(run_names, value=run_names[0], label="Run", elem_id="run-select")
                generate = gr.Button("Generate report", variant="primary", elem_id="generate",
                                     interactive=bool(config.runs))
                chart = gr.Plot(label="Finding probabilities", elem_id="probabilities")
            with gr.Column():
                generated = gr.Textbox(label="Generated findings (draft)", lines=12, elem_id="generated-report")
                timing = gr.Markdown(elem_id="timing")
            with gr.Column():
                reference = gr.Textbox(label="Reference report", lines=12, elem_id="reference-report")
                reference_labels = gr.Markdown()

        # slider order in event inputs: (sagittal→x, coronal→y, axial→z)
        xyz = [sliders["sagittal"], sliders["coronal"], sliders["axial"]]

        def on_case(name):
            if not name:
                return [None] * 3 + [gr.Slider()] * 3 + ["", ""]
            try:
                volume = browser.volumes.get(name)
            except Rad3dError as err:
                raise gr.Error(str(err))
            centre = [s // 2 for s in volume.shape]
            new_sliders = [gr.Slider(minimum=0, maximum=n - 1, value=c) for n, c in zip(volume.shape, centre)]
            planes = _render_all(browser, name, *centre, *WINDOW_PRESETS["lung"])
            c = browser.dataset.case(name)
            labels_md = ""
            if c.labels is not None:
                present = [n for n, v in zip(label_names, c.labels) if v]
                labels_md = "**Reference labels:** " + (", ".join(present) if present else "none of the 18 findings")
            return planes + new_sliders + [c.report, labels_md]

        case.change(on_case, [case], images + xyz + [reference, reference_labels])
        app.load(on_case, [case], images + xyz + [reference, reference_labels])

        def on_view(name, x, y, z, w, lv):
            if not name:
                return [None] * 3
            return _render_all(browser, name, x, y, z, w, lv)

        for control in xyz + [width, level]:
            control.change(on_view, [case] + xyz + [width, level], images, show_progress="hidden")

        def on_preset(p):
            w, lv = WINDOW_PRESETS[p]
            return w, lv

        preset.change(on_preset, [preset], [width, level])

        def on_filter(q, f):
            names = browser.case_names(q, f)
            return gr.Dropdown(choices=names, value=names[0] if names else None)

        query.change(on_filter, [query, finding], [case])
        finding.change(on_filter, [query, finding], [case])

        def on_generate(name, run_name):
            if not name or run_name == NO_RUN:
                raise gr.Error("Choose a case and a run first.")
            try:
                session = browser.session(run_name)
                result = session.report(browser.volumes.get(name))
            except Rad3dError as err:
                raise gr.Error(str(err))
            except Exception as err:  # keep serving others; say what failed
                log.exception("generation failed for %s", name)
                raise gr.Error(f"Report generation failed: {err}")
            c = browser.dataset.case(name)
            ref = dict(zip(label_names, c.labels.astype(int))) if c.labels is not None else None
            fig = probability_chart(result.probabilities, dict(zip(label_names, session.thresholds)), ref)
            t = result.timings
            md = f"Generated in {t['total_s']:.1f} s ({result.n_tokens} tokens, run `{run_name}`, variant {session.run.config.variant})"
            return fig, result.report, md

        generate.click(on_generate, [case, run], [chart, generated, timing])
    return app


