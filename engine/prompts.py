"""The text around the image tokens of the multimodal system (engine.multimodal), in M3D-LaMed's
formats (`multi_dataset.py`; ../shared/m3d/README.md "VQA and captions in M3D"):

    report        <image> "Findings:"                         answer: " " + the report section
    open VQA      <image> " " + question                      answer: " " + the answer
    closed VQA    <image> " " + question + " Choices: A. {A} B. {B} C. {C} D. {D}"
                                                              answer: " " + "{letter}. {choice}"

(M3D trains on `question + " " + answer`; the answer here carries that space.) Torch-free, so
`rad3d ask` counts a question's tokens before any model loads.
"""

from __future__ import annotations

import string

from engine.errors import ConfigError

REPORT_INSTRUCTIONS = {"findings": "Findings:", "impression": "Impression:"}
CHOICE_LETTERS = string.ascii_uppercase[:8]


def report_instruction(section: str) -> str:
    try:
        return REPORT_INSTRUCTIONS[section]
    except KeyError:
        raise ConfigError(f"no report instruction for section {section!r} (known: "
                          f"{', '.join(REPORT_INSTRUCTIONS)})") from None


def question_text(question: str, choices: tuple[str, ...] | list[str] | None = None) -> str:
    """M3D's question: open without choices, closed ("{question} Choices: A. .. B. ..") with."""
    text = " ".join(question.split())
    if choices:
        check_choices(choices)
        text += " Choices: " + " ".join(f"{letter}. {c}" for letter, c in zip(CHOICE_LETTERS, choices))
    return text


def question_prompt(question: str, choices: tuple[str, ...] | list[str] | None = None) -> str:
    """The instruction after the image tokens: M3D's question with the space that follows them."""
    return " " + question_text(question, choices)


def answer_target(answer: str) -> str:
    """What the decoder learns to write after an instruction (M3D's space between the two)."""
    return " " + answer.strip()


def closed_answer(letter: str, choice: str) -> str:
    """M3D's closed answer: "B. Liver"."""
    return f"{letter}. {choice}"


def check_choices(choices) -> None:
    if not 2 <= len(choices) <= len(CHOICE_LETTERS):
        raise ConfigError(f"a closed question takes 2 to {len(CHOICE_LETTERS)} choices, got {len(choices)}")
    empty = [CHOICE_LETTERS[i] for i, c in enumerate(choices) if not str(c).strip()]
    if empty:
        raise ConfigError(f"choice {', '.join(empty)} is empty")


def chosen_choice(generated: str, choices) -> tuple[str, str] | None:
    """(letter, choice text) the answer picked, by M3D's rule ("{letter}." anywhere in the text;
    the first such letter counts), or None when it names none."""
    hits = [(generated.find(f"{letter}."), letter, c) for letter, c in zip(CHOICE_LETTERS, choices)]
    hits = [h for h in hits if h[0] >= 0]
    if not hits:
        return None
    _, letter, choice = min(hits)
    return letter, choice
