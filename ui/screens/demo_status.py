"""The demo build in the page: a banner (step, elapsed time, last log lines) refreshed by a timer
while the embedded demo model is built in the background; when the build ends the run lists of
Review and Compare get the new runs, or the banner says why it failed and how to retry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from ui.demo_builder import BUILDING, FAILED, IDLE, READY, RETRY, BuildStatus, DemoBuilder, clock
from ui.screens.common import NO_RUN, NO_RUN_HINT, ordered_runs

TICK_S = 1.5
SHOWN_LINES = 4


def _fenced(lines: list[str]) -> str:
    body = "\n".join(line.replace("```", "'''") for line in lines if line)
    return f"\n\n```text\n{body}\n```" if body else ""


def banner_markdown(status: BuildStatus) -> str:
    """The banner's text for one snapshot ("" while idle)."""
    recent = [str(line) for line in status.lines[-SHOWN_LINES:]]
    if status.phase == BUILDING:
        now = f"\n\nNow: {status.step}" if status.step else "\n\nStarting…"
        return (f"**Building the embedded demo model** (first start, {clock(status.elapsed_s)} so far). "
                "The viewer works meanwhile; reports can be generated once it is ready, and the Run "
                "lists fill in by themselves." + now + _fenced(recent + [status.bar]))
    if status.phase == READY:
        names = ", ".join(f"`{n}`" for n in status.runs)
        return (f"**Demo model ready** (built in {clock(status.elapsed_s)}): runs {names} are in the Run "
                "lists of Review and Compare.")
    if status.phase == FAILED:
        return (f"**The demo model could not be built** (after {clock(status.elapsed_s)}). The viewer "
                f"keeps working. To retry, run {RETRY} in a terminal (it continues where it stopped), "
                "then restart the app." + _fenced([status.error]) + _fenced(recent))
    return ""


def no_run_hint(status: BuildStatus | None, have_runs: bool, live: bool = True) -> str:
    """What to say where a report was asked for and no run can make one (`live`: with the current
    step and time; off for text fixed when the page is built)."""
    if status is None or status.phase == IDLE:
        return NO_RUN_HINT
    if have_runs:
        return "Choose a run in the Run list."
    if status.phase == BUILDING:
        step = f" (now {status.step}, {clock(status.elapsed_s)} so far)" if status.step and live else ""
        return (f"No run yet: the embedded demo model is being built{step}; see the banner at the top. "
                "The Run list fills in by itself when it is ready.")
    if status.phase == READY:
        return NO_RUN_HINT
    return (f"No run: the demo model could not be built ({status.error}). Retry with {RETRY}, then "
            "restart the app, or start it with `--run NAME=RUN_DIR`.")


@dataclass(frozen=True)
class TickUpdate:
    """What one timer tick changes; None: leave that part of the page as it is."""
    banner: str
    banner_visible: bool
    stop: bool  # the build has ended: the timer stops
    run_choices: list[str] | None = None
    review_run: str | None = None
    compare_runs: list[str] | None = None
    message: str | None = None  # for the Review and Compare status lines


def adopt_runs(config, status: BuildStatus) -> None:
    """Make the build's finished runs generate (runs given by the user keep their names)."""
    for name, path in status.runs.items():
        config.runs.setdefault(name, path)


def tick_update(status: BuildStatus, run_names: list[str], review_run: str | None,
                compare_runs: list[str] | None, compare_limit: int) -> TickUpdate:
    """The page's changes for one snapshot, given the configured run names and the page's choices."""
    banner = banner_markdown(status)
    if not status.done:
        return TickUpdate(banner, bool(banner), stop=False)
    names = list(run_names)
    review = review_run if review_run in names else (names[0] if names else NO_RUN)
    compare = [n for n in compare_runs or [] if n in names] or names[:compare_limit]
    message = ("Demo model ready: choose a case and press Generate." if status.phase == READY
               else no_run_hint(status, bool(names)))
    return TickUpdate(banner, True, stop=True, run_choices=names or [NO_RUN], review_run=review,
                      compare_runs=compare, message=message)


def attach_demo_status(app: gr.Blocks, builder: DemoBuilder, config, banner: gr.Markdown,
                       review_run: gr.Dropdown, review_status: gr.Markdown,
                       compare_runs: gr.CheckboxGroup, compare_status: gr.Markdown,
                       compare_limit: int) -> Callable:
    """Poll the builder from every open page; returns the tick callback (tests call it directly)."""
    timer = gr.Timer(TICK_S, active=True)

    def on_tick(review_value, compare_value):
        status = builder.status()
        adopt_runs(config, status)
        u = tick_update(status, ordered_runs(config), review_value, compare_value, compare_limit)
        keep = gr.skip()
        return (
            gr.Markdown(value=u.banner, visible=u.banner_visible),
            keep if u.run_choices is None else gr.Dropdown(choices=u.run_choices, value=u.review_run),
            keep if u.message is None else u.message,
            keep if u.run_choices is None else gr.CheckboxGroup(choices=[n for n in u.run_choices if n != NO_RUN],
                                                                value=u.compare_runs),
            keep if u.message is None else u.message,
            gr.Timer(active=not u.stop),
        )

    inputs = [review_run, compare_runs]
    outputs = [banner, review_run, review_status, compare_runs, compare_status, timer]
    timer.tick(on_tick, inputs, outputs, show_progress="hidden")
    app.load(on_tick, inputs, outputs, show_progress="hidden")
    return on_tick


def build_banner(builder: DemoBuilder | None) -> gr.Markdown | None:
    """The banner, placed where it is called (nothing without a builder)."""
    if builder is None:
        return None
    text = banner_markdown(builder.status())
    return gr.Markdown(text, visible=bool(text), elem_id="demo-status")
