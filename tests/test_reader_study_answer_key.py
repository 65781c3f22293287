"""The answer key: loaded from a CSV (each bad row named on its own line, nothing stored from a bad
file), each reader's exact agreement and quadratic-weighted kappa against it in `rad3d study summary`
and in the workbook's key_agreement sheet, checked against scikit-learn."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

import cli
from engine.errors import ConfigError
from reader_study_fixtures import write_phantom_dataset, write_predictions
from study.predictions import read_predictions
from study.readers.answer_key import key_frame, load_answer_key
from study.readers.service import ReaderStudyService, StudySpec

# Grades per queue position: ann's, ben's and the key's (clinical; technical is 6 − clinical).
ANN, BEN = [4, 2, 5], [3, 3, 1]


@pytest.fixture
def rated(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n=2)
    preds = write_predictions(data, tmp_path / "preds")
    db_path = tmp_path / "study.sqlite"
    service = ReaderStudyService(db_path)
    creds = service.create_study(StudySpec(name="pilot", arms={a: read_predictions(p) for a, p in preds.items()},
                                           arm_sources={a: str(p) for a, p in preds.items()}, readers=["ann", "ben"],
                                           cases=1, seed=0, data_dir=str(data)))
    for reader, grades in (("ann", ANN), ("ben", BEN)):
        tok = service.login("pilot", reader, creds.passwords[reader])
        view = service.next_item(tok)
        for g in grades:
            view = service.submit_rating(tok, view.code, g, 6 - g)
    return service, db_path


def _run(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def test_answer_key_agreement_in_summary_and_export(rated, tmp_path):
    service, db_path = rated
    ratings = service.ratings_frame("pilot")
    codes = sorted(ratings["item_code"].unique())
    key = {code: g for code, g in zip(codes, [4, 3, 5])}
    bad = tmp_path / "bad.csv"
    bad.write_text("item_code,clinical,technical\n"
                   f"{codes[0]},4,2\nR-NOPE,3,3\n{codes[0]},4,2\n{codes[1]},7,3\n{codes[2]},x,1\n")
    with pytest.raises(ConfigError) as err:
        load_answer_key(service, "pilot", bad)
    lines = str(err.value).splitlines()
    assert "4 bad row(s)" in lines[0]
    assert [ln.strip().split(":")[0] for ln in lines[1:]] == ["line 3", "line 4", "line 5", "line 6"]
    assert "no item 'R-NOPE'" in lines[1] and "listed twice" in lines[2] and "clinical='7'" in lines[3]
    assert key_frame(service, "pilot").empty  # nothing stored from a bad file
    assert cli.main(["study", "key", "--db", str(db_path), "--name", "pilot", "--csv", str(bad)]) == 1

    good = tmp_path / "key.csv"
    pd.DataFrame({"item_code": codes, "clinical": [key[c] for c in codes],
                  "technical": [6 - key[c] for c in codes]}).to_csv(good, index=False)
    assert "3 item(s) keyed" in _run("study", "key", "--db", str(db_path), "--name", "pilot", "--csv", str(good))
    expected = {}
    for reader in ("ann", "ben"):
        mine = ratings[ratings["reader"] == reader].set_index("item_code").loc[codes, "clinical"].to_numpy()
        truth = np.array([key[c] for c in codes])
        expected[reader] = ((mine == truth).mean(),
                            cohen_kappa_score(mine, truth, weights="quadratic", labels=np.arange(1, 6)))
    summary = _run("study", "summary", "--db", str(db_path), "--name", "pilot", "--resamples", "50")
    assert "Agreement with the answer key" in summary
    for reader, (exact, kappa) in expected.items():
        assert f"clinical  {reader:12s} exact {exact:.3f}  kappa {kappa:.3f} (n=3)" in summary

    out = tmp_path / "study.xlsx"
    _run("study", "export", "--db", str(db_path), "--name", "pilot", "--out", str(out), "--resamples", "50")
    sheet = pd.read_excel(out, sheet_name="key_agreement").set_index(["score", "reader"])
    for reader, (exact, kappa) in expected.items():
        assert sheet.loc[("clinical", reader), "exact_agreement"] == pytest.approx(exact)
        assert sheet.loc[("clinical", reader), "weighted_kappa"] == pytest.approx(kappa)
        assert sheet.loc[("technical", reader), "exact_agreement"] == pytest.approx(exact)  # technical = 6 − clinical
