"""`rad3d study create|export|summary|readers` from the command line: the workbook's sheets read
back with pandas, arm names only in the admin export, CSV rows, and errors on one line."""

from __future__ import annotations

import re

import openpyxl
import pandas as pd
import pytest

import cli
from reader_study_fixtures import ARMS, write_phantom_dataset, write_predictions
from study.readers.service import ReaderStudyService


@pytest.fixture(scope="module")
def scored_study(tmp_path_factory):
    """A study made with `rad3d study create`, scored by two readers through the service."""
    root = tmp_path_factory.mktemp("export")
    data = write_phantom_dataset(root / "data", n=6)
    preds = write_predictions(data, root / "preds")
    db_path = root / "study.sqlite"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["study", "create", "--db", str(db_path), "--name", "pilot", "--arms",
                         *[f"{a}={p}" for a, p in preds.items()], "--data", str(data), "--cases", "3",
                         "--readers", "ann,ben", "--seed", "1"]) == 0
    passwords = dict(re.findall(r"reader (\S+)\s+password (\S+)", out.getvalue()))
    assert set(passwords) == {"ann", "ben"} and re.search(r"admin\s+admin\s+password \S+", out.getvalue())
    service = ReaderStudyService(db_path)
    submitted = 0
    for k, reader in enumerate(("ann", "ben")):
        tok = service.login("pilot", reader, passwords[reader])
        view = service.next_item(tok)
        while not view.done and (reader == "ann" or view.position <= 5):  # ben stops after 5
            view = service.submit_rating(tok, view.code, 1 + (view.position + k) % 5, 1 + view.position % 5,
                                         ["no_repetition"], "=HYPERLINK(\"x\")" if view.position == 1 else "ok")
            submitted += 1
    return db_path, submitted


def test_export_workbook_reads_back_with_pandas(scored_study, tmp_path, capsys):
    db_path, submitted = scored_study
    out = tmp_path / "study.xlsx"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(out), "--resamples", "200"]) == 0
    sheets = pd.read_excel(out, sheet_name=None)
    assert {"ratings", "summary", "agreement", "wilcoxon", "progress"} <= set(sheets)
    ratings = sheets["ratings"]
    assert len(ratings) == submitted == 9 + 5
    assert set(ratings["arm"]) == set(ARMS) and set(ratings["reader"]) == {"ann", "ben"}
    assert ratings["clinical"].between(1, 5).all() and ratings["item_code"].str.startswith("R-").all()
    assert {"case", "criteria", "comment", "created_at", "updated_at", "seconds_spent"} <= set(ratings.columns)
    assert ratings["comment"].str.startswith("=").sum() == 0  # formulas are not run by the spreadsheet
    summary = sheets["summary"]
    assert set(summary["arm"].dropna()) == set(ARMS) and "(average)" in set(summary["reader"].dropna())
    assert set(sheets["agreement"]["measure"]) == {"ICC(2,1)", "weighted kappa (quadratic)"}
    assert sheets["progress"].set_index("reader").loc["ben", "rated"] == 5
    assert "14 ratings written" in capsys.readouterr().out


def test_blind_export_names_no_arm(scored_study, tmp_path):
    db_path, submitted = scored_study
    out = tmp_path / "blind.xlsx"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(out), "--blind",
                     "--resamples", "100"]) == 0
    workbook = openpyxl.load_workbook(out, read_only=True)
    cells = {str(c) for ws in workbook.worksheets for row in ws.iter_rows(values_only=True) for c in row if c is not None}
    assert not cells & set(ARMS)
    assert "arm" not in pd.read_excel(out, sheet_name="ratings").columns
    csv = tmp_path / "ratings.csv"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(csv)]) == 0
    assert len(pd.read_csv(csv)) == submitted


def test_summary_readers_and_errors(scored_study, tmp_path, capsys):
    db_path, _ = scored_study
    plot = tmp_path / "plot.html"
    assert cli.main(["study", "summary", "--db", str(db_path), "--name", "pilot", "--resamples", "100",
                     "--plot", str(plot), "--reference-arm", "baseline"]) == 0
    out = capsys.readouterr().out
    assert "ICC(2,1)" in out and "vs baseline" in out and plot.stat().st_size > 10_000
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "nope", "--out", str(tmp_path / "x.xlsx")]) == 1
    assert "no study named 'nope'" in capsys.readouterr().err
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(tmp_path / "x.txt")]) == 1
    assert cli.main(["study", "create", "--db", str(db_path), "--name", "x", "--arms", "bad", "--readers", "a"]) == 1
    assert "NAME=PREDICTIONS.csv" in capsys.readouterr().err
