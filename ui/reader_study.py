"""The reader-study screens: a reader logs in, sees only their own queue (the case in the viewer,
one report under its opaque code, the paper's rubric), scores it and moves on; an admin login
shows progress and the summary.

Every handler is a plain function of the service layer; the same functions are exposed over
Gradio's HTTP API (api_name login, logout, next_item, item_at, submit_rating, finish, admin_login,
admin_summary, admin_revoke) with the session token as an explicit argument, so scripts and tests
can drive a study exactly as the browser does. Logins are throttled per reader name and per client
address (the address Gradio reports: behind a reverse proxy, every reader shares the proxy's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from engine.config import JsonConfig
from engine.data.source import DataSource
from engine.errors import Rad3dError
from study.readers.rubric import CRITERIA, SCALE, SCORES
from study.readers.service import ReaderStudyService, ServiceConfig
from ui.viewer import PLANE_AXIS, WINDOW_PRESETS, Crosshair, render_plane
from ui.volumes import VolumeStore

log = logging.getLogger("rad3d.reader_study")


@dataclass
class ReaderStudyAppConfig(JsonConfig):
    db_path: str  # a SQLite path or a PostgreSQL URL (study.readers.db.database_url)
    study: str
    data_dir: DataSource | Path | None = None  # default: the dataset named when the study was created
    max_side: int = 380
    service: ServiceConfig = field(default_factory=ServiceConfig)


class ReaderStudyHandlers:
    """The screens' logic: each method takes plain values and returns plain dicts; a refusal
    becomes a gr.Error carrying the service's message."""

    def __init__(self, config: ReaderStudyAppConfig):
        self.config = config
        self.service = ReaderStudyService(config.db_path, create=False, config=config.service)
        self.info = self.service.study_info(config.study)  # refuses an unknown study at start
        # A study records its DataSource as JSON (older studies: a folder path); coerce reads both.
        data = config.data_dir or self.info["data_dir"]
        self.data_dir = DataSource.coerce(data) if data else None
        self._dataset = None
        self.volumes = VolumeStore(self._load_volume)

    # -- data for the viewer ----------------------------------------------------------------------
    def _load_volume(self, name: str):
        if self._dataset is None:
            from engine.data import resolve

            self._dataset = resolve(self.data_dir, section=None)
        return self._dataset.load_volume(name)

    def render(self, volume_name: str | None, plane: str, position: float, preset: str):
        """(image, message): one plane of the case at a relative position 0..1 along its axis."""
        if not volume_name or self.data_dir is None:
            return None, "" if not volume_name else "No dataset folder given: the case cannot be shown."
        try:
            volume = self.volumes.get(volume_name)
        except Rad3dError as err:
            log.warning("cannot show %s: %s", volume_name, err)
            return None, f"The case's volume cannot be shown ({err.problem})."
        shape = volume.shape
        axis = PLANE_AXIS[plane]
        index = min(shape[axis] - 1, max(0, round(float(position) * (shape[axis] - 1))))
        centre = [s // 2 for s in shape]
        centre[axis] = index
        width, level = WINDOW_PRESETS[preset]
        image = render_plane(volume.hu, volume.spacing_mm, plane, Crosshair(*centre), width, level,
                             max_side=self.config.max_side, show_crosshair=False)
        return image, ""

    # -- API --------------------------------------------------------------------------------------
    @staticmethod
    def _call(fn, *args):
        try:
            return fn(*args)
        except Rad3dError as err:
            raise gr.Error(err.problem, print_exception=False) from None

    @staticmethod
    def _client(request: gr.Request | None) -> str | None:
        client = getattr(request, "client", None)
        return getattr(client, "host", None)

    def login(self, reader: str, password: str, request: gr.Request | None = None) -> dict:
        token = self._call(lambda: self.service.login(self.config.study, reader, password, client=self._client(request)))
        return {"token": token, "reader": str(reader).strip(), "item": self._call(self.service.next_item, token).to_dict()}

    def logout(self, token: str) -> dict:
        self._call(self.service.logout, token)
        return {"logged_out": True}

    def next_item(self, token: str) -> dict:
        return self._call(self.service.next_item, token).to_dict()

    def item_at(self, token: str, position: int) -> dict:
        return self._call(self.service.item_at, token, position).to_dict()

    def submit_rating(self, token: str, code: str, clinical: int | None, technical: int | None,
                      criteria: list[str] | None = None, comment: str = "") -> dict:
        return self._call(self.service.submit_rating, token, code, clinical, technical, criteria or [], comment).to_dict()

    def finish(self, token: str) -> dict:
        return self._call(self.service.finish, token).to_dict()

    def review(self, token: str) -> dict:
        """The reader's own answers, read-only (shown when they have finished)."""
        return {"answers": self._call(self.service.review, token)}

    def admin_unlock(self, token: str, reader: str, code: str) -> dict:
        """Allow one revision of a reader's locked rating of item `code`."""
        self._call(self.service.admin_unlock, token, (reader or "").strip(), (code or "").strip())
        return {"unlocked": (code or "").strip(), "reader": (reader or "").strip()}

    def admin_login(self, password: str, request: gr.Request | None = None) -> dict:
        return {"token": self._call(lambda: self.service.login(self.config.study, "admin", password, role="admin",
                                                               client=self._client(request)))}

    def admin_revoke(self, token: str, reader: str = "") -> dict:
        """End the sessions of one reader (or, with an empty name, of every reader)."""
        return {"ended": self._call(self.service.admin_revoke, token, (reader or "").strip() or None)}

    def admin_summary(self, token: str) -> dict:
        from study.readers.answer_key import key_frame
        from study.readers.stats import format_summary, summarize

        self._call(self.service.admin_study, token)
        ratings = self.service.ratings_frame(self.config.study)
        summary = summarize(ratings, resamples=1000, key=key_frame(self.service, self.config.study))
        return {"progress": self.service.progress(self.config.study).astype(str).to_dict("records"),
                "summary": format_summary(summary), "ratings": len(ratings)}


# -- what the reader's screen shows for an item view ------------------------------------------------
def progress_text(view: dict) -> str:
    if view.get("finished"):
        return f"**Finished** — {view['rated']} of {view['total']} rated. Thank you."
    if view.get("done") and not view.get("code"):
        return f"**All {view['total']} items rated.** Look back with *Previous*, or press *Finish*."
    return f"**Item {view['position']} of {view['total']}** · {view['rated']} of {view['total']} rated"


def review_text(answers: list[dict]) -> str:
    """The reader's answers as a read-only table (Markdown)."""
    if not answers:
        return ""
    rows = [f"| {a['position']} | {a['code']} | {a['clinical']} | {a['technical']} | "
            f"{', '.join(a['criteria']) or '—'} | {(a['comment'] or '—').replace('|', '/')} |" for a in answers]
    return "\n".join(["#### Your answers", "", "| # | Report | Clinical | Technical | Criteria | Comment |",
                      "|---|---|---|---|---|---|", *rows])


def report_text(view: dict) -> str:
    if not view.get("code"):
        return ""
    text = (view.get("report") or "").strip() or "*(no text was generated)*"
    return f"#### Report {view['code']}\n\n{text}"


def _reader_screen(h: ReaderStudyHandlers, config: ReaderStudyAppConfig) -> SimpleNamespace:
    """The reader's login and scoring components (wired by _wire_reader_screen)."""
    scale_choices = [(f"{k} — {v}", k) for k, v in SCALE.items()]
    token = gr.State("")
    view = gr.State({})
    with gr.Column(visible=True) as login_box:
        name_in = gr.Textbox(label="Reader name", elem_id="reader-name")
        password_in = gr.Textbox(label="Password", type="password", elem_id="reader-password")
        login_btn = gr.Button("Log in", variant="primary", elem_id="login-button")
    message = gr.Markdown("", elem_id="message")
    with gr.Column(visible=False) as work_box:
        progress = gr.Markdown("", elem_id="progress")
        with gr.Row():
            with gr.Column(scale=1):
                plane = gr.Radio(["axial", "coronal", "sagittal"], value="axial", label="Plane")
                position = gr.Slider(0, 1, value=0.5, step=0.01, label="Slice")
                preset = gr.Dropdown(list(WINDOW_PRESETS), value="lung", label="Window")
                image = gr.Image(label="Case", type="pil", interactive=False, height=config.max_side, elem_id="case-image")
            with gr.Column(scale=1):
                report = gr.Markdown("", elem_id="report")
                reference = gr.Markdown("", elem_id="reference", visible=bool(h.info["show_reference"]))
                clinical = gr.Radio(scale_choices, label=f"{SCORES['clinical']} (1–5, required)",
                                    elem_id="clinical-score")
                clinical_criteria = gr.CheckboxGroup([(v, k) for k, v in CRITERIA["clinical"].items()],
                                                     label="Clinical criteria met", elem_id="clinical-criteria")
                technical = gr.Radio(scale_choices, label=f"{SCORES['technical']} (1–5, required)",
                                     elem_id="technical-score")
                technical_criteria = gr.CheckboxGroup([(v, k) for k, v in CRITERIA["technical"].items()],
                                                      label="Technical criteria met", elem_id="technical-criteria")
                comment = gr.Textbox(label="Comment", lines=3, elem_id="comment")
                with gr.Row():
                    previous_btn = gr.Button("Previous", elem_id="previous-button")
                    submit_btn = gr.Button("Submit and next", variant="primary", elem_id="submit-button")
                    skip_btn = gr.Button("First unrated", elem_id="next-button")
                    finish_btn = gr.Button("Finish", variant="stop", elem_id="finish-button")
                    logout_btn = gr.Button("Log out", elem_id="logout-button")
    return SimpleNamespace(
        token=token, view=view, login_box=login_box, work_box=work_box, message=message, progress=progress,
        report=report, reference=reference, clinical=clinical, clinical_criteria=clinical_criteria,
        technical=technical, technical_criteria=technical_criteria, comment=comment, image=image,
        name_in=name_in, password_in=password_in, login_btn=login_btn, plane=plane, position=position,
        preset=preset, previous_btn=previous_btn, submit_btn=submit_btn, skip_btn=skip_btn,
        finish_btn=finish_btn, logout_btn=logout_btn,
    )


def _wire_reader_screen(h: ReaderStudyHandlers, c: SimpleNamespace) -> None:
    """The reader screen's events: every one shows the whole screen again from the service's answer."""
    token, view, login_box, work_box, message, progress = c.token, c.view, c.login_box, c.work_box, c.message, c.progress
    report, reference, clinical, clinical_criteria = c.report, c.reference, c.clinical, c.clinical_criteria
    technical, technical_criteria, comment, image = c.technical, c.technical_criteria, c.comment, c.image
    name_in, password_in, plane, position, preset = c.name_in, c.password_in, c.plane, c.position, c.preset
    screen = [token, view, login_box, work_box, message, progress, report, reference, clinical, clinical_criteria,
              technical, technical_criteria, comment, image]

    def show(tok: str, v: dict, note: str = ""):
        rating = v.get("rating") or {}
        has_item = bool(v.get("code"))
        img, img_note = h.render(v.get("volume_name"), "axial", 0.5, "lung") if has_item else (None, "")
        ref = v.get("reference")
        editable = has_item and not v.get("finished") and not rating.get("locked")
        shown = review_text(h.review(tok)["answers"]) if v.get("finished") else report_text(v)
        return [tok, v, gr.update(visible=False), gr.update(visible=True), note or img_note, progress_text(v),
                shown, f"**Reference report**\n\n{ref}" if ref else "",
                gr.update(value=rating.get("clinical"), interactive=editable),
                gr.update(value=[c for c in rating.get("criteria", []) if c in CRITERIA["clinical"]]),
                gr.update(value=rating.get("technical"), interactive=editable),
                gr.update(value=[c for c in rating.get("criteria", []) if c in CRITERIA["technical"]]),
                rating.get("comment", ""), img]

    def keep(note: str):
        return [gr.update()] * 4 + [note] + [gr.update()] * (len(screen) - 5)

    def ui_login(reader, password, request: gr.Request):
        try:
            out = h.login(reader, password, request)
        except gr.Error as err:
            return keep(f"⚠ {err.message}")
        return show(out["token"], out["item"], f"Logged in as {out['reader']}.")

    def ui_submit(tok, v, c, cc, t, tc, note):
        try:
            nxt = h.submit_rating(tok, v.get("code") or "", c, t, list(cc or []) + list(tc or []), note or "")
        except gr.Error as err:
            return keep(f"⚠ {err.message}")
        return show(tok, nxt, f"Saved {v.get('code')}.")

    def ui_move(tok, v, step):
        try:
            if step == 0:
                nxt = h.next_item(tok)
            else:
                here = v.get("position") or (v.get("total", 0) + 1)
                nxt = h.item_at(tok, max(1, here + step))
        except gr.Error as err:
            return keep(f"⚠ {err.message}")
        return show(tok, nxt)

    def ui_finish(tok, v):
        try:
            return show(tok, h.finish(tok))
        except gr.Error as err:
            return keep(f"⚠ {err.message}")

    def ui_logout(tok):
        try:
            h.logout(tok)
        except gr.Error:
            pass  # an ended session is what was asked for
        return ["", {}, gr.update(visible=True), gr.update(visible=False), "Logged out.", "", "", "",
                gr.update(value=None), gr.update(value=[]), gr.update(value=None), gr.update(value=[]), "", None]

    def ui_render(v, pl, pos, pr):
        img, _ = h.render((v or {}).get("volume_name"), pl, pos, pr)
        return img

    private = dict(api_visibility="private")
    c.login_btn.click(ui_login, [name_in, password_in], screen, **private)
    password_in.submit(ui_login, [name_in, password_in], screen, **private)
    c.submit_btn.click(ui_submit, [token, view, clinical, clinical_criteria, technical, technical_criteria, comment],
                     screen, **private)
    c.previous_btn.click(lambda t, v: ui_move(t, v, -1), [token, view], screen, **private)
    c.skip_btn.click(lambda t, v: ui_move(t, v, 0), [token, view], screen, **private)
    c.finish_btn.click(ui_finish, [token, view], screen, **private)
    c.logout_btn.click(ui_logout, [token], screen, **private)
    for control in (plane, position, preset):
        control.change(ui_render, [view, plane, position, preset], image, **private)



def _admin_screen(h: ReaderStudyHandlers, config: ReaderStudyAppConfig) -> None:
    """The study lead's progress, scores and session revocation."""
    admin_token = gr.State("")
    admin_password = gr.Textbox(label="Admin password", type="password", elem_id="admin-password")
    admin_btn = gr.Button("Log in as admin", elem_id="admin-login-button")
    admin_refresh = gr.Button("Refresh")
    admin_progress = gr.Dataframe(label="Progress per reader", interactive=False)
    admin_text = gr.Markdown("")
    admin_plot = gr.Plot(label="Scores per arm")
    with gr.Row():
        revoke_name = gr.Textbox(label="End the sessions of reader (empty: every reader)", elem_id="revoke-name")
        revoke_btn = gr.Button("End sessions", elem_id="revoke-button")


    private = dict(api_visibility="private")

    def ui_admin_login(password, request: gr.Request):
        try:
            tok = h.admin_login(password, request)["token"]
        except gr.Error as err:
            return "", gr.update(), f"⚠ {err.message}", gr.update()
        return (tok, *ui_admin_refresh(tok)[1:])

    def ui_admin_refresh(tok):
        try:
            data = h.admin_summary(tok)
        except gr.Error as err:
            return tok, gr.update(), f"⚠ {err.message}", gr.update()
        import pandas as pd

        from study.readers.stats import score_figure

        ratings = h.service.ratings_frame(config.study)
        fig = score_figure(ratings) if not ratings.empty else None
        return tok, pd.DataFrame(data["progress"]), f"```\n{data['summary']}\n```", fig

    admin_btn.click(ui_admin_login, [admin_password], [admin_token, admin_progress, admin_text, admin_plot], **private)
    admin_refresh.click(ui_admin_refresh, [admin_token], [admin_token, admin_progress, admin_text, admin_plot], **private)

    def ui_revoke(tok, name):
        try:
            ended = h.admin_revoke(tok, name)["ended"]
        except gr.Error as err:
            return f"⚠ {err.message}"
        return f"{ended} session(s) ended."

    revoke_btn.click(ui_revoke, [admin_token, revoke_name], [admin_text], **private)



def _http_api(h: ReaderStudyHandlers) -> None:
    # The HTTP API: the same handlers with the token passed explicitly.
    gr.api(h.login, api_name="login")
    gr.api(h.logout, api_name="logout")
    gr.api(h.next_item, api_name="next_item")
    gr.api(h.item_at, api_name="item_at")
    gr.api(h.submit_rating, api_name="submit_rating")
    gr.api(h.finish, api_name="finish")
    gr.api(h.review, api_name="review")
    gr.api(h.admin_login, api_name="admin_login")
    gr.api(h.admin_summary, api_name="admin_summary")
    gr.api(h.admin_revoke, api_name="admin_revoke")
    gr.api(h.admin_unlock, api_name="admin_unlock")


def build_reader_study_app(config: ReaderStudyAppConfig) -> gr.Blocks:
    h = ReaderStudyHandlers(config)
    with gr.Blocks(title=f"rad3d reader study: {config.study}") as app:
        gr.Markdown(f"## Reader study: {config.study}\nResearch software: drafts are not for patient care.")
        with gr.Tabs():
            with gr.Tab("Reader"):
                reader = _reader_screen(h, config)
            with gr.Tab("Admin"):
                _admin_screen(h, config)
        _wire_reader_screen(h, reader)
        _http_api(h)
    app.reader_study = h  # for the lead's app and for tests
    return app
