"""The answer key: the study lead's reference grades per item, loaded from a CSV with columns
item_code, clinical, technical (1-5 each). Every bad row is named on its own line and nothing is
stored unless the whole file is good; loading again replaces the key."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import delete, select

from engine.errors import ConfigError
from study.readers.db import AnswerKey, Item, Study
from study.readers.service import ReaderStudyService

COLUMNS = ("item_code", "clinical", "technical")


def _grade(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and 1 <= number <= 5 else None


def read_key(path: str | Path, codes: set[str]) -> dict[str, tuple[int, int]]:
    """item_code → (clinical, technical); ConfigError listing every bad row (file line numbers)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"answer key cannot be read ({str(err).splitlines()[0]})", path) from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"answer key needs columns {', '.join(COLUMNS)}; missing {', '.join(missing)}", path)
    key: dict[str, tuple[int, int]] = {}
    problems = []
    for line, row in enumerate(table.itertuples(index=False), start=2):  # line 1 is the header
        code = str(row.item_code).strip()
        grades = (_grade(row.clinical), _grade(row.technical))
        if code not in codes:
            problems.append(f"line {line}: no item {code[:40]!r} in this study")
        elif code in key:
            problems.append(f"line {line}: item {code} is listed twice")
        elif None in grades:
            problems.append(f"line {line}: grades must be whole numbers from 1 to 5, got "
                            f"clinical={str(row.clinical)[:20]!r} technical={str(row.technical)[:20]!r}")
        else:
            key[code] = grades
    if problems:
        raise ConfigError(f"answer key has {len(problems)} bad row(s), nothing loaded:\n  " + "\n  ".join(problems), path)
    return key


def load_answer_key(service: ReaderStudyService, study: str, path: str | Path) -> int:
    """Replace the study's answer key with the CSV's; returns the number of items keyed."""
    with service.Session.begin() as s:
        study_id = s.scalars(select(Study.id).where(Study.name == study)).first()
        if study_id is None:
            raise ConfigError(f"no study named {study!r}", service.path)
        items = dict(s.execute(select(Item.code, Item.id).where(Item.study_id == study_id)).all())
        key = read_key(path, set(items))
        s.execute(delete(AnswerKey).where(AnswerKey.item_id.in_(list(items.values()))))
        s.add_all([AnswerKey(item_id=items[code], clinical=c, technical=t) for code, (c, t) in key.items()])
    return len(key)


def key_frame(service: ReaderStudyService, study: str) -> pd.DataFrame:
    """The study's answer key: item_code, clinical, technical (empty when none is loaded)."""
    with service.Session() as s:
        rows = s.execute(select(Item.code, AnswerKey.clinical, AnswerKey.technical)
                         .join(AnswerKey, AnswerKey.item_id == Item.id).join(Study, Study.id == Item.study_id)
                         .where(Study.name == study).order_by(Item.code)).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(COLUMNS))
