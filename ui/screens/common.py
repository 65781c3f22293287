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
