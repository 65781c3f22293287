"""Reading and checking a predictions CSV, the seam between `rad3d evaluate` (which writes it) and
metrics, compare, the app and the reader study (which read it).

Columns: VolumeName, reference, generated, run, variant, plus optional timing columns such as
`seconds` and `new_tokens`. A case whose generation produced nothing has an empty `generated`
string; a missing reference is an error, because no metric can be computed without one.
Beside it, provenance.json ({"run": name, "provenance": engine.provenance.Provenance.to_dict()})
says what the run that wrote them was trained on and the licence that follows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.errors import DatasetError

REQUIRED_COLUMNS = ("VolumeName", "reference", "generated", "run", "variant")
PROVENANCE_FILE = "provenance.json"
TIMING_COLUMNS = ("seconds", "new_tokens")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """The predictions CSV as a DataFrame with text columns as str (missing generated → "").
    Raises DatasetError naming the file and listing every bad row at once."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except FileNotFoundError:
        raise DatasetError("predictions file not found", path) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read predictions CSV ({str(err).splitlines()[0]})", path) from None
    return validate_predictions(df, source=path)


def validate_predictions(df: pd.DataFrame, source: str | Path = "<predictions>") -> pd.DataFrame:
    """Checks an in-memory predictions table the same way `read_predictions` checks a file and
    returns a cleaned copy (text stripped of surrounding whitespace, timing columns numeric)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(
            f"predictions CSV lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})", source
        )
    df = df.copy()
    for col in REQUIRED_COLUMNS:
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v).strip())
    problems: list[str] = []
    for i, row in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        if not row.VolumeName:
            problems.append(f"line {i}: empty VolumeName")
        if not row.reference:
            problems.append(f"line {i} ({row.VolumeName or '?'}): empty reference text")
    key = ["VolumeName", "run", "variant"]
    dup = df.duplicated(key, keep=False) & (df["VolumeName"] != "")
    for (name, run, variant), group in df[dup].groupby(key, sort=False):
        lines = ", ".join(str(j + 2) for j in group.index)
        problems.append(f"lines {lines}: {name} repeated for run {run!r}, variant {variant!r}")
    for col in TIMING_COLUMNS:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col].replace("", None), errors="coerce")
        bad = values.isna() & (df[col].astype(str).str.strip() != "") | (values < 0)
        for j in df.index[bad]:
            problems.append(f"line {j + 2}: {col} {df.at[j, col]!r} is not a non-negative number")
        df[col] = values
    if problems:
        raise DatasetError(f"{len(problems)} bad row(s) in predictions", source, problems)
    if df.empty:
        raise DatasetError("predictions CSV has no rows", source)
    return df.reset_index(drop=True)


def write_provenance(folder: str | Path, run: str, provenance: dict) -> Path:
    """FOLDER/provenance.json for the predictions of `run` in FOLDER."""
    import json

    path = Path(folder) / PROVENANCE_FILE
    path.write_text(json.dumps({"run": run, "provenance": provenance}, indent=1))
    return path


def read_provenance(predictions: str | Path, runs) -> dict | None:
    """The provenance recorded beside a predictions CSV, when it is that of the one run in `runs`
    (the CSV's run names); None when there is none, it is unreadable, or it names another run."""
    import json

    try:
        doc = json.loads((Path(predictions).parent / PROVENANCE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or set(runs) != {doc.get("run")}:
        return None
    return doc.get("provenance") or None
