"""Writing a study's ratings to a workbook (sheets ratings, summary, agreement, wilcoxon, progress) or a CSV
of the ratings. Only the admin export names the arms; a blinded export leaves the arm column out
and shows arms in the summary as "arm 1", "arm 2", ... in a random order."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from engine.errors import ConfigError
from study.readers.service import ReaderStudyService
from study.readers.stats import StudySummary, summarize


def _blind(ratings: pd.DataFrame, seed: int) -> pd.DataFrame:
    arms = sorted(ratings["arm"].unique())
    random.Random(seed).shuffle(arms)
    return ratings.assign(arm=ratings["arm"].map({a: f"arm {i}" for i, a in enumerate(arms, start=1)}))


def _excel_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Strings that start like a formula would be run by a spreadsheet; prefix them with a quote."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v)
    return out


def export_study(service: ReaderStudyService, study: str, out: str | Path, *, admin: bool = True,
                 reference_arm: str | None = None, resamples: int = 2000, seed: int = 0) -> int:
    """Write FILE.xlsx (ratings, summary, agreement, wilcoxon, progress sheets) or FILE.csv (ratings);
    returns the number of rating rows written."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise ConfigError("export file must end in .xlsx or .csv", out)
    ratings = service.ratings_frame(study, with_arms=True)
    stats_input = ratings if admin else _blind(ratings, seed)
    summary: StudySummary = summarize(stats_input, reference_arm if admin else None, resamples=resamples, seed=seed)
    shown = ratings if admin else ratings.drop(columns=["arm"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp" + suffix)
    if suffix == ".csv":
        _excel_safe(shown).to_csv(tmp, index=False)
    else:
        summary_sheet = summary.means
        if not summary.improvements.empty:
            summary_sheet = pd.concat([summary.means, summary.improvements.rename(columns={"percent": "percent_vs_reference"})],
                                      ignore_index=True)
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            _excel_safe(shown).to_excel(writer, sheet_name="ratings", index=False)
            summary_sheet.to_excel(writer, sheet_name="summary", index=False)
            summary.agreement.to_excel(writer, sheet_name="agreement", index=False)
            summary.wilcoxon.to_excel(writer, sheet_name="wilcoxon", index=False)
            service.progress(study).to_excel(writer, sheet_name="progress", index=False)
    tmp.replace(out)
    return len(shown)
