"""The Gradio review app: Review (viewer, probabilities, reports side by side), Compare (two or
three runs on one case), Research (the last evaluation's metrics), plus any extra tabs a caller
mounts (e.g. the reader study). Serves on loopback unless told otherwise."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from engine.config import JsonConfig
from engine.data.source import DataSource
from engine.home import rad3d_home
from study.consistency import ConsistencyConfig
from ui.cases import CaseBrowser
from ui.upload_limits import DEFAULT_MAX_UPLOAD_MB, DEFAULT_RETENTION_HOURS

log = logging.getLogger("rad3d.app")

# An extra tab: (title, builder). The builder is called inside the tab with the CaseBrowser
# (dataset, volumes, runs) and the AppConfig, and builds its own components.
ExtraTab = tuple[str, Callable[[CaseBrowser, "AppConfig"], None]]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CSS = """
.report-text { font-size: 0.95rem; line-height: 1.45; }
.report-text mark { padding: 0 2px; border-radius: 3px; }
/* Research tables fit the page: cells wrap instead of the table scrolling sideways. */
#research-comparison table, #research-per-finding table, #research-metrics table { table-layout: auto; width: 100%; }
#research-comparison td, #research-per-finding td, #research-metrics td { white-space: normal; word-break: break-word; }
"""


@dataclass
class AppConfig(JsonConfig):
    data_dir: Path
    runs: dict[str, Path] = field(default_factory=dict)  # shown name → run directory
    data_source: DataSource | None = None  # --data with its overrides; None: data_dir alone
    eval_dir: Path | None = None  # evaluation folder for the research tab (`rad3d metrics` output)
    upload_dir: Path | None = None  # default: $RAD3D_HOME/uploads
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    upload_retention_hours: float = DEFAULT_RETENTION_HOURS  # uploads older than this are deleted
    max_side: int = 420  # displayed plane size in pixels
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)  # when a draft is flagged
    viewer: str = "webgl"  # "webgl" (NiiVue, falls back to "png" without WebGL2) or "png" (server-drawn planes)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        self.runs = {name: Path(p) for name, p in self.runs.items()}
        self.eval_dir = None if self.eval_dir is None else Path(self.eval_dir)
        self.upload_dir = Path(self.upload_dir) if self.upload_dir else rad3d_home() / "uploads"
        from engine.errors import ConfigError

        if self.viewer not in ("webgl", "png"):
            raise ConfigError(f"--viewer must be webgl or png, got {self.viewer!r}")
        if self.max_upload_mb <= 0:
            raise ConfigError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if not self.upload_retention_hours > 0:
            raise ConfigError(f"--upload-retention-hours must be positive, got {self.upload_retention_hours}")


def build_app(config: AppConfig, extra_tabs: Sequence[ExtraTab] = (), demo_builder=None) -> gr.Blocks:
    """`demo_builder`: a started ui.demo_builder.DemoBuilder making the demo model in the
    background; the page then shows its progress and offers its runs once it is done (config.runs
    grows)."""
    from ui.screens.compare_tab import MAX_COLUMNS, build_compare
    from ui.screens.demo_status import attach_demo_status, build_banner
    from ui.screens.research_tab import build_logit_curve, build_research
    from ui.screens.review_tab import build_review

    browser = CaseBrowser(config)
    retention_s = int(config.upload_retention_hours * 3600)
    # delete_cache: Gradio's own temporary copies (uploads, rendered planes) go after the retention
    # time too, swept as often as the upload area is.
    sweep_s = int(min(900, max(60, retention_s / 10)))
    with gr.Blocks(title="rad3d review", delete_cache=(sweep_s, retention_s)) as app:
        gr.Markdown("## rad3d: draft reports from chest CT\nResearch software: drafts are not for patient care.")
        banner = build_banner(demo_builder)
        with gr.Tab("Review", elem_id="tab-review"):
            review = build_review(app, browser, config, demo_builder)
        with gr.Tab("Compare runs", elem_id="tab-compare"):
            compare = build_compare(browser, config, review.case, demo_builder)
        with gr.Tab("Research", elem_id="tab-research"):
            build_research(config.eval_dir)
            build_logit_curve()
        for title, build_tab in extra_tabs:
            with gr.Tab(title):
                build_tab(browser, config)

        def end_session(request: gr.Request = None):
            n = browser.end_session(request.session_hash or "")
            if n:
                log.info("session ended: %d upload(s) deleted", n)

        app.unload(end_session)
        app.rad3d_demo_tick = None if demo_builder is None else attach_demo_status(  # for tests
            app, demo_builder, config, banner, review.run, review.status, compare.runs, compare.status,
            MAX_COLUMNS)
    app.rad3d_browser = browser  # for tests and callers that mount more screens
    app.rad3d_end_session = end_session  # for tests
    return app


def launch(app: gr.Blocks, config: AppConfig, host: str = "127.0.0.1", port: int | None = 7860, **kwargs):
    """Serve `app`: loopback unless another host is asked for explicitly; uploads larger than the
    configured limit are cut off by the server as well as refused by the page."""
    if host not in LOOPBACK:
        log.warning("serving on %s: the app is reachable from other machines", host)
    browser = getattr(app, "rad3d_browser", None)
    if browser is not None:
        browser.uploads.start_sweeper()
    return app.launch(
        server_name=host, server_port=port, share=False, show_error=True, css=CSS,
        max_file_size=int(config.max_upload_mb * 2**20), **kwargs,
    )
