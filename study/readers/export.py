"""Writing a study's ratings to a workbook (sheets ratings, summary, agreement, wilcoxon, progress, and
key_agreement when an answer key is loaded) or a CSV of the ratings.

Only the admin export names the arms. A blind export (for sharing, e.g. with the readers) shows arms
as "arm 1", "arm 2", ... and readers as "reader 1", "reader 2", ..., both in an order keyed by the
study's secret (stable across exports, unguessable without the database), and leaves out the
timestamps that could tell who rated when; `with_readers=True` keeps the readers' names and times.

Every text cell is made safe for a spreadsheet: characters the xlsx format forbids (C0 controls
such as U+000B, Word's manual line break) are replaced, and text that starts like a formula is
quoted. The file is written to a temporary file beside the target and renamed into place; a
failed export leaves neither.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pandas as pd
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from engine.errors import ConfigError
from study.readers import db
from study.readers.answer_key import key_frame
from study.readers.service import ReaderStudyService
from study.readers.stats import StudySummary, summarize

_TIMES = ["created_at", "updated_at", "seconds_spent"]


def _labels(values, secret: str, purpose: str, word: str) -> dict[str, str]:
    names = sorted(set(values))
    db.keyed_rng(secret, purpose).shuffle(names)
    return {v: f"{word} {i}" for i, v in enumerate(names, start=1)}


def blind_ratings(ratings: pd.DataFrame, progress: pd.DataFrame, secret: str, *, with_readers: bool = False):
    """(ratings, progress) with arms (and, unless `with_readers`, readers and times) replaced by labels."""
    ratings = ratings.assign(arm=ratings["arm"].map(_labels(ratings["arm"], secret, "export-arms", "arm")))
    if with_readers:
        return ratings, progress
    readers = _labels(progress["reader"], secret, "export-readers", "reader")
    ratings = ratings.assign(reader=ratings["reader"].map(readers)).drop(columns=_TIMES)
    progress = progress.assign(reader=progress["reader"].map(readers)).drop(columns=["last_rating"])
    return ratings, progress.sort_values("reader", key=lambda c: c.str.split().str[-1].astype(int)).reset_index(drop=True)


def _cell_text(value):
    if not isinstance(value, str):
        return value
    # U+000B and U+000C are line and page breaks to the writer: keep them as a newline.
    value = ILLEGAL_CHARACTERS_RE.sub(lambda m: "\n" if m.group() in "\x0b\x0c" else "", value)
    # Strings that start like a formula would be run by a spreadsheet; prefix them with a quote.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _excel_safe(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(_cell_text)
    return out


def export_study(service: ReaderStudyService, study: str, out: str | Path, *, admin: bool = True,
                 with_readers: bool = False, reference_arm: str | None = None, resamples: int = 2000,
                 seed: int = 0) -> int:
    """Write FILE.xlsx (ratings, summary, agreement, wilcoxon, progress sheets) or FILE.csv (ratings);
    returns the number of rating rows written. `admin=False` writes the blind export."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise ConfigError("export file must end in .xlsx or .csv", out)
    if out.is_dir():
        raise ConfigError("export target is a directory", out)
    ratings = service.ratings_frame(study, with_arms=True)
    progress = service.progress(study)
    if not admin:
        ratings, progress = blind_ratings(ratings, progress, service.study_secret(study), with_readers=with_readers)
    summary: StudySummary = summarize(ratings, reference_arm if admin else None, resamples=resamples, seed=seed,
                                      key=key_frame(service, study))
    shown = ratings if admin else ratings.drop(columns=["arm"])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp" + suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if suffix == ".csv":
            _excel_safe(shown).to_csv(tmp, index=False)
        else:
            summary_sheet = summary.means
            if not summary.improvements.empty:
                improvements = summary.improvements.rename(columns={"percent": "percent_vs_reference"})
                summary_sheet = pd.concat([summary.means, improvements], ignore_index=True)
            sheets = {"ratings": shown, "summary": summary_sheet, "agreement": summary.agreement,
                      "wilcoxon": summary.wilcoxon, "progress": progress}
            if summary.key_agreement is not None and not summary.key_agreement.empty:
                sheets["key_agreement"] = summary.key_agreement
            writer = pd.ExcelWriter(tmp, engine="openpyxl")
            try:
                for sheet, frame in sheets.items():
                    _excel_safe(frame).to_excel(writer, sheet_name=sheet, index=False)
            except BaseException:
                # Not `with`: closing a half-written book raises its own error and hides the real one.
                with contextlib.suppress(Exception):
                    writer.close()
                raise
            writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(shown)
