"""`rad3d study create|export|summary|readers` from the command line: the workbook's sheets read
back with pandas, arm names only in the admin export, CSV rows, and errors on one line."""

from __future__ import annotations

import re

import krippendorff
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
    agreement = sheets["agreement"]
    assert set(agreement["measure"]) == {"ICC(2,1)", "weighted kappa (quadratic)", "Krippendorff's alpha (ordinal)"}
    alpha = agreement[agreement["measure"] == "Krippendorff's alpha (ordinal)"].set_index("score")
    ratings_by_item = ratings.pivot_table(index="item_code", columns="reader", values="clinical", aggfunc="first")
    expected = krippendorff.alpha(reliability_data=ratings_by_item.T.to_numpy(dtype=float), level_of_measurement="ordinal")
    assert alpha.loc["clinical", "value"] == pytest.approx(expected) and alpha.loc["clinical", "n_items"] == 5
    assert alpha.loc["clinical", "ci_low"] - 1e-9 <= expected <= alpha.loc["clinical", "ci_high"] + 1e-9
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


def test_blind_export_carries_no_reader_identity_unless_asked(scored_study, tmp_path):
    db_path, submitted = scored_study

    def cells(path):
        workbook = openpyxl.load_workbook(path, read_only=True)
        return {str(c) for ws in workbook.worksheets for row in ws.iter_rows(values_only=True) for c in row if c is not None}

    blind = tmp_path / "blind.xlsx"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(blind), "--blind",
                     "--resamples", "50"]) == 0
    shown = cells(blind)
    assert not shown & {"ann", "ben", *ARMS}
    ratings = pd.read_excel(blind, sheet_name="ratings")
    assert set(ratings["reader"]) == {"reader 1", "reader 2"} and len(ratings) == submitted
    assert not {"created_at", "updated_at", "seconds_spent"} & set(ratings.columns)  # times could name who rated when
    # The labels are keyed by the study's secret: the same in every export, not guessable from names.
    again = tmp_path / "again.csv"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(again), "--blind"]) == 0
    assert pd.read_csv(again)[["reader", "item_code"]].values.tolist() == ratings[["reader", "item_code"]].values.tolist()
    named = tmp_path / "named.xlsx"
    assert cli.main(["study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(named), "--blind",
                     "--with-readers", "--resamples", "50"]) == 0
    assert {"ann", "ben"} <= cells(named) and not cells(named) & set(ARMS)


def one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out and len(err.splitlines()) == 1, captured.err
    return err


def test_missing_corrupt_database_and_busy_port_give_one_line(scored_study, tmp_path, capsys):
    import shutil
    import socket

    missing = tmp_path / "typo" / "study.sqlite"
    for action in (["summary"], ["export", "--out", str(tmp_path / "x.xlsx")], ["readers"], ["serve"]):
        err = one_line_error(capsys, ["study", action[0], "--db", str(missing), "--name", "pilot", *action[1:]])
        assert "no study database here" in err and str(missing) in err
    assert not missing.parent.exists() and not (tmp_path / "x.xlsx").exists()  # nothing created

    db_path, _ = scored_study
    damaged = tmp_path / "damaged.sqlite"
    import sqlite3

    con = sqlite3.connect(db_path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file, then copy it
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    shutil.copy(db_path, damaged)
    raw = bytearray(damaged.read_bytes())
    for start in range(page, len(raw), page):  # every b-tree page header after the first: torn
        raw[start:start + 12] = b"\x7f" * 12
    damaged.write_bytes(bytes(raw))
    err = one_line_error(capsys, ["study", "summary", "--db", str(damaged), "--name", "pilot"])
    assert str(damaged) in err and ("damaged" in err or "not a usable" in err or "cannot be read" in err)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = one_line_error(capsys, ["study", "serve", "--db", str(db_path), "--name", "pilot", "--port", str(port)])
    assert f"127.0.0.1:{port}" in err and "another --port" in err


def test_lead_revokes_sessions_from_the_command_line(scored_study, capsys):
    db_path, _ = scored_study
    service = ReaderStudyService(db_path)
    password = service.reset_password("pilot", "ann")
    token = service.login("pilot", "ann", password)
    assert cli.main(["study", "readers", "--db", str(db_path), "--name", "pilot", "--revoke", "ann"]) == 0
    assert "1 session(s) of ann ended" in capsys.readouterr().out
    from study.readers.service import AccessDenied

    with pytest.raises(AccessDenied):
        service.next_item(token)
