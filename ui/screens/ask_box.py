"""The Review tab's Ask box: for a multimodal run trained for VQA (engine.multimodal_session), a
question about the loaded case in, the answer streamed out; up to four choice fields make it a closed
question (M3D's "Choices: A. .. B. .."), and the chosen letter is named. Hidden for other runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from html import escape

import gradio as gr

from ui.screens.common import NO_RUN, message, session_owner

log = logging.getLogger(__name__)


def answers_questions(config, run_name: str | None) -> bool:
    """Whether the run is a multimodal one trained with the vqa task (read from its config alone)."""
    from engine.multimodal_run import is_multimodal_run, open_multimodal_run

    path = config.runs.get(run_name) if run_name and run_name != NO_RUN else None
    if path is None or not is_multimodal_run(path):
        return False
    try:
        return "vqa" in open_multimodal_run(path).config.tasks
    except Exception:  # a broken run: its own loader says what is wrong when it is used
        return False


def ask_stream(session_for: Callable[[], object], volume_for: Callable[[], object], question: str,
               choices: list[str]) -> Iterator[str]:
    """Markdown of the answer as it grows, then with the chosen letter (a closed question)."""
    from engine.multimodal_session import Answer, check_question
    from engine.prompts import chosen_choice

    choices = [c.strip() for c in choices if c and c.strip()] or None
    session = session_for()
    instruction = check_question(session.run, question, choices, session.tokenizer)  # one line for bad input
    yield "Encoding the volume…"
    for piece in session.answer_stream(volume_for(), instruction):
        if isinstance(piece, Answer):
            picked = chosen_choice(piece.text, choices) if choices else None
            tail = f"\n\n**Chosen:** {picked[0]}. {escape(picked[1])}" if picked else (
                "\n\n**Chosen:** none of the choices" if choices else "")
            yield f"**A:** {escape(piece.text) or '(empty answer)'}{tail}"
        else:
            yield f"**A:** {escape(piece)}…"


def build_ask(browser, config, case, run) -> None:
    """The box (below the report columns), shown while the chosen run answers questions."""
    with gr.Group(visible=answers_questions(config, run.value), elem_id="ask-box") as box:
        gr.Markdown("#### Ask about this case (draft answers, not for patient care)")
        question = gr.Textbox(label="Question", placeholder="Is there a pleural effusion on the left?",
                              elem_id="ask-question")
        with gr.Row():
            fields = [gr.Textbox(label=f"Choice {letter}", elem_id=f"ask-choice-{letter.lower()}")
                      for letter in "ABCD"]
        ask = gr.Button("Ask", elem_id="ask")
        answer = gr.Markdown(elem_id="ask-answer")

    run.change(lambda r: gr.Group(visible=answers_questions(config, r)), [run], [box])

    def on_ask(name, run_name, q, a, b, c, d, request: gr.Request = None):
        if not name:
            yield "Choose a case first."
            return
        try:
            yield from ask_stream(lambda: browser.session(run_name), lambda: browser.volume(name, session_owner(request)),
                                  q, [a, b, c, d])
        except Exception as err:  # bad input or a failed run: one line, the app keeps serving
            log.info("ask failed for %s with %s: %s", name, run_name, err)
            yield message(err, "Answering")

    ask.click(on_ask, [case, run, question, *fields], [answer])
