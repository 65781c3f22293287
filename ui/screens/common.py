"""Small pieces the screens share: readable messages, the probability panel and the no-run hint."""

from __future__ import annotations

import html

from engine.errors import Rad3dError

NO_RUN = "(no run)"
NO_RUN_HINT = (
    "No run is loaded, so no report can be generated. Start the app with a trained run: "
    "`rad3d app --run NAME=RUN_DIR` (a folder written by `rad3d train`, holding config.json), "
    "or build the embedded demo model (see the README), which the app then opens by default."
)


def run_section(config, run_name: str | None) -> str:
    """The report section a configured run writes (its config's report_section), read without
    loading the model; "findings" when there is no such run or its config cannot be read."""
    from engine.rundir import open_run

    if not run_name or run_name not in config.runs:
        return "findings"
    try:
        return open_run(config.runs[run_name], check=False).config.report_section or "findings"
    except Exception:  # a broken run says so where its draft would be
        return "findings"


def reference_caption(section: str) -> str:
    """The line above a reference report naming its section (the one the run was trained on)."""
    name = section.capitalize() if section in ("findings", "impression") else "Whole report"
    return f'<div class="reference-section"><small>Section: <b>{html.escape(name)}</b></small></div>'


def ordered_runs(config) -> list[str]:
    """The configured run names with the method first: runs of variant V-3 lead, the others keep
    their order (the first is every run list's default)."""
    from engine.rundir import open_run

    def variant(name: str) -> str:
        try:
            return open_run(config.runs[name], check=False).config.variant
        except Exception:
            return ""

    names = list(config.runs)
    method = [n for n in names if variant(n) == "v3"]
    return method + [n for n in names if n not in method]


def reference_view(browser, extractor, name: str, section: str) -> tuple[str, dict[str, int] | None]:
    """(the reference report of `section`, highlighted under its section's name; its labels)."""
    from ui.findings_view import highlight_html

    text, labels = browser.reference(name, section)
    body = highlight_html(text, extractor) if text else escaped("(no reference report)")
    return reference_caption(section) + body, labels


def session_owner(request) -> str:
    """Whose uploads a request may see: its browser session's (Gradio's session hash)."""
    return (getattr(request, "session_hash", None) or "") if request is not None else ""


def message(err: BaseException, what: str) -> str:
    """A one-line, readable reason for the page: rad3d's own errors as they are, others prefixed."""
    if isinstance(err, Rad3dError):
        return f"⚠️ {what}: {err}"
    return f"⚠️ {what} failed ({type(err).__name__}: {err}). The server keeps running; try another case or run."


def escaped(text: str) -> str:
    return f'<div class="report-text">{html.escape(text or "").replace(chr(10), "<br>")}</div>'


def timing_line(timings: dict[str, float], n_words: int, run_name: str, variant: str) -> str:
    t = timings
    return (f"**Time to report {t.get('total_s', float('nan')):.1f} s** (encode "
            f"{t.get('preprocess_s', 0) + t.get('encode_s', 0):.1f} s, text {t.get('generate_s', 0):.1f} s; "
            f"{n_words} words) · run `{run_name}`, variant {variant}")


def provenance_html(provenance) -> str:
    """One line under the draft's heading: what the run was trained on and its licence; a red
    banner when it learned from phantoms only (a real scan then gets a meaningless draft)."""
    line = html.escape(f"Trained on: {provenance.trained_on()} · Licence: {provenance.licence_statement()}")
    if provenance.synthetic_only:
        return (f'<div class="provenance warning" style="background:#fde8e8;color:#8a1c1c;border:1px solid #e0a0a0;'
                f'border-radius:4px;padding:4px 8px">⚠ <b>{html.escape(provenance.warning())}</b><br>'
                f'<small>{line}</small></div>')
    return f'<div class="provenance"><small>{line}</small></div>'


def domain_html(check) -> str:
    """A red banner when the scan is outside the run's domain (engine.domain), else nothing."""
    if check is None or check.in_domain:
        return ""
    return (f'<div class="domain-warning" style="background:#fde8e8;color:#8a1c1c;border:2px solid #c0392b;'
            f'border-radius:4px;padding:4px 8px">⛔ <b>{html.escape(check.message())}</b>. The draft is marked and '
            f'must not be read as a report of this scan.</div>')
