"""Visual question answering items: the item type, M3D's prompt and answer formats, and `vqa.csv`.

`vqa.csv` (beside reports.csv in a dataset folder; `rad3d synth` writes it for phantoms, `rad3d vqa
build` rewrites it) has one row per item, in M3D-VQA's columns renamed to the dataset's style:

    VolumeName    the volume the question is about (a row of reports.csv; its split is the dataset's)
    QuestionType  presence, side, size, count or location (engine.synth.vqa says what each asks)
    Form          closed (four choices, one right) or open (free answer)
    Question      the question, without the choices
    ChoiceA..ChoiceD  the four choices of a closed item; empty for an open one
    Answer        the right answer's text (a closed item's is the text of its right choice)
    AnswerChoice  A, B, C or D for a closed item; empty for an open one

Prompts follow M3D's `multi_dataset.py`, written in one place (engine.prompts; the image tokens go
in front, by the caller): closed "{Question} Choices: A. {A} B. {B} C. {C} D. {D}" answered
"{letter}. {Answer}"; open "{Question}" answered "{Answer}".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.errors import DatasetError
from engine.prompts import closed_answer, question_text

VQA_FILE = "vqa.csv"
FORMS = ("closed", "open")
QUESTION_TYPES = ("presence", "side", "size", "count", "location")
LETTERS = ("A", "B", "C", "D")
CHOICE_COLUMNS = tuple(f"Choice{x}" for x in LETTERS)
VQA_COLUMNS = ("VolumeName", "QuestionType", "Form", "Question", *CHOICE_COLUMNS, "Answer", "AnswerChoice")
_LISTED = 5  # rows named per problem before "and N more"


@dataclass(frozen=True)
class VqaItem:
    volume_name: str
    question_type: str
    form: Literal["closed", "open"]
    question: str
    choices: tuple[str, str, str, str] | None
    answer: str
    answer_letter: str | None

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if not self.question.strip():
            raise ValueError(f"{self.volume_name}: empty question")
        if self.form == "closed":
            if self.choices is None or len(self.choices) != 4 or self.answer_letter not in LETTERS:
                raise ValueError(f"{self.volume_name}: a closed item needs four choices and a letter A-D")
            if self.choices[LETTERS.index(self.answer_letter)] != self.answer:
                raise ValueError(f"{self.volume_name}: choice {self.answer_letter} is not the answer {self.answer!r}")
        elif self.choices is not None or self.answer_letter is not None:
            raise ValueError(f"{self.volume_name}: an open item has no choices")


def prompt_text(item: VqaItem) -> str:
    """The question as M3D writes it (engine.prompts, the one place of the format)."""
    return question_text(item.question, item.choices)


def answer_text(item: VqaItem) -> str:
    """The target text: "{letter}. {answer}" for a closed item (M3D's "B. Liver"), the answer for an open one."""
    return closed_answer(item.answer_letter, item.answer) if item.form == "closed" else item.answer


def item_row(item: VqaItem) -> dict[str, str]:
    choices = item.choices or ("", "", "", "")
    return {"VolumeName": item.volume_name, "QuestionType": item.question_type, "Form": item.form,
            "Question": item.question, **dict(zip(CHOICE_COLUMNS, choices)), "Answer": item.answer,
            "AnswerChoice": item.answer_letter or ""}


def write_vqa_csv(items: Iterable[VqaItem], path: str | Path) -> Path:
    """All items as `vqa.csv` rows, in their order (written to a temporary file first, then moved)."""
    import pandas as pd

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame([item_row(i) for i in items], columns=list(VQA_COLUMNS)).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _names(rows: list[str]) -> str:
    shown = ", ".join(rows[:_LISTED])
    return shown + (f" and {len(rows) - _LISTED} more" if len(rows) > _LISTED else "")


def _row_problem(row: dict, known: set[str] | None) -> str | None:
    """What is wrong with one row (None when nothing is)."""
    if known is not None and row["VolumeName"] not in known:
        return "unknown VolumeName"
    if not row["Question"].strip():
        return "empty Question"
    if row["Form"] not in FORMS:
        return f"Form {row['Form']!r} is not closed or open"
    if row["Form"] == "closed":
        letter = row["AnswerChoice"].strip()
        if letter not in LETTERS:
            return f"AnswerChoice {letter!r} is not A-D"
        if row[f"Choice{letter}"].strip() != row["Answer"].strip():
            return f"Choice{letter} {row[f'Choice{letter}']!r} does not match Answer {row['Answer']!r}"
        if any(not row[c].strip() for c in CHOICE_COLUMNS):
            return "a closed item with an empty choice"
    elif not row["Answer"].strip():
        return "empty Answer"
    return None


def read_vqa_csv(path: str | Path, volume_names: Iterable[str] | None = None) -> list[VqaItem]:
    """The items of a `vqa.csv`; with `volume_names` (the dataset's), a row naming another volume is
    a problem. Every problem is collected and raised as one DatasetError naming the file, each
    problem with its rows as `VolumeName (line n)`."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot read CSV ({err})", path) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in VQA_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"missing columns {missing}", path)
    known = None if volume_names is None else set(volume_names)
    by_problem: dict[str, list[str]] = {}
    items = []
    for line, row in enumerate(df[list(VQA_COLUMNS)].to_dict("records"), start=2):  # line 1 is the header
        row = {k: v if k in ("Question", "Answer", *CHOICE_COLUMNS) else v.strip() for k, v in row.items()}
        problem = _row_problem(row, known)
        if problem:
            by_problem.setdefault(problem, []).append(f"{row['VolumeName'] or '(empty)'} (line {line})")
            continue
        closed = row["Form"] == "closed"
        items.append(VqaItem(
            volume_name=row["VolumeName"], question_type=row["QuestionType"], form=row["Form"],
            question=row["Question"], choices=tuple(row[c] for c in CHOICE_COLUMNS) if closed else None,
            answer=row["Answer"], answer_letter=row["AnswerChoice"] if closed else None))
    if by_problem:
        problems = [f"{what}: {_names(rows)}" for what, rows in by_problem.items()]
        raise DatasetError(f"{sum(len(r) for r in by_problem.values())} bad rows", path, problems)
    return items


def dataset_vqa(dataset) -> dict[str, list[VqaItem]]:
    """The items of a resolved dataset's `vqa.csv` by split ({"train": [...], "valid": [...], "test": [...]}):
    each item takes its volume's split, so a patient is on one side for questions as for reports."""
    path = Path(dataset.root) / VQA_FILE
    if not path.is_file():
        raise DatasetError(f"no {VQA_FILE} (make one with `rad3d vqa build --data {dataset.root}`)", dataset.root)
    items = read_vqa_csv(path, (c.volume_name for c in dataset.cases))
    out: dict[str, list[VqaItem]] = {"train": [], "valid": [], "test": []}
    for item in items:
        out[dataset.case(item.volume_name).split].append(item)
    return out
