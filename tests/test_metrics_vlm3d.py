"""The VLM3D challenge's evaluation: its file (round trip, the challenge's own shapes, malformed
files), labels from our extractor, the CRG score from its definition, the macro scores against
scikit-learn, and the two commands (`rad3d metrics --vlm3d`, `rad3d evaluate --format vlm3d`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from cli import main
from engine.errors import ConfigError, DatasetError
from engine.labels import ct_rate
from study.bootstrap import bootstrap
from study.findings import FindingExtractor, FindingStatus
from study.metrics import vlm3d
from study.metrics.vlm3d import FINDINGS, Labels

K = len(FINDINGS)


def _labels(matrix: np.ndarray, names=None, how="test") -> Labels:
    names = names or [f"case_{i}" for i in range(len(matrix))]
    return Labels({n: np.asarray(row, dtype=np.int64) for n, row in zip(names, matrix)}, "<test>", how)


def _random_pair(n=25, seed=0):
    rng = np.random.default_rng(seed)
    gt = (rng.random((n, K)) < 0.3).astype(int)
    pred = np.where(rng.random((n, K)) < 0.7, gt, 1 - gt)
    gt[:, 3] = 0  # no positive: precision/recall/F1 0/0 and AUROC undefined
    pred[:, 3] = 0
    gt[:, 5] = 1  # all positive: AUROC undefined
    return gt, pred


def test_findings_are_ct_rate_label_columns_in_order():
    assert FINDINGS == ct_rate().names


# -- the file ----------------------------------------------------------------------------------
def test_write_read_round_trip_names_cases_without_extension(tmp_path):
    gt, _ = _random_pair(3)
    entries = vlm3d.entries_for(["valid_1_a_1.nii.gz", "valid_2_a_1.mha", "sub/valid_3_a_2"],
                                ["Cardiomegaly is present.", "Ünïcode\nand lines", ""], gt)
    path = vlm3d.write_vlm3d(entries, tmp_path / "sub.json")
    doc = json.loads(path.read_text())
    assert [set(e) for e in doc] == [set(vlm3d.KEYS)] * 3
    assert [e["input_image_name"] for e in doc] == ["valid_1_a_1", "valid_2_a_1", "valid_3_a_2"]
    assert doc[0]["labels"] == gt[0].tolist()
    back = vlm3d.read_vlm3d(path)
    assert back == entries
    assert all(isinstance(v, int) for v in back[1].labels)


def test_reads_the_challenges_wrapped_submission_and_ground_truth_without_labels(tmp_path):
    reports = [{"input_image_name": "a1", "report": "Cardiomegaly is present. No pleural effusion."},
               {"input_image_name": "b2.nii.gz", "report": "Possible pleural effusion."}]
    wrapped = tmp_path / "predictions.json"
    wrapped.write_text(json.dumps([{"outputs": [{"value": {"name": "Generated reports", "version": "1.0",
                                                           "generated_reports": reports}}]}]))
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps({"name": "Generated reports", "generated_reports": reports}))
    for path in (wrapped, truth):
        entries = vlm3d.read_vlm3d(path)
        assert [e.labels for e in entries] == [None, None]
        got = vlm3d.labels_of(entries, str(path))
        assert set(got.by_case) == {"a1", "b2"} and "extracted" in got.how
        assert got.by_case["a1"][FINDINGS.index("Cardiomegaly")] == 1
        assert got.by_case["a1"][FINDINGS.index("Pleural effusion")] == 0


def test_uncertain_maps_to_one_unless_asked_otherwise():
    text = "Possible pleural effusion on the right."
    assert FindingExtractor().extract(text)["Pleural effusion"] is FindingStatus.UNCERTAIN
    j = FINDINGS.index("Pleural effusion")
    assert vlm3d.extract_labels([text])[0, j] == 1
    assert vlm3d.extract_labels([text], uncertain_as="negative")[0, j] == 0
    assert vlm3d.extract_labels(["No pleural effusion."])[0, j] == 0
    assert vlm3d.extract_labels(["Bilateral pleural effusion is present."])[0, j] == 1
    with pytest.raises(ConfigError, match="uncertain_as"):
        vlm3d.extract_labels([text], uncertain_as="maybe")


_GOOD = {"input_image_name": "x", "report": "r", "labels": [0] * K}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    ('"a string"', "top level is str"),
    ('{"reports": []}', "without a 'generated_reports' list"),
    ("[]", "no entries"),
    (json.dumps([_GOOD, 5]), r"entry 1: not an object"),
    (json.dumps([{"input_image_name": "x", "report": "r"}]), r"entry 0 \(x\): missing key\(s\) labels"),
    (json.dumps([{**_GOOD, "input_image_name": ""}]), "input_image_name must be a non-empty string"),
    (json.dumps([{**_GOOD, "report": None}]), r"entry 0 \(x\): report must be a string"),
    (json.dumps([_GOOD, {**_GOOD, "input_image_name": "x.nii.gz"}]), r"entries 0 and 1: case 'x' repeated"),
    (json.dumps([{**_GOOD, "labels": [0] * (K - 1)}]), rf"entry 0 \(x\): {K - 1} labels, expected {K}"),
    (json.dumps([{**_GOOD, "labels": [0] * 4 + [2] + [0] * (K - 5)}]),
     r"labels\[4\] \(Coronary artery wall calcification\) is 2, expected 0 or 1"),
    (json.dumps([{**_GOOD, "labels": [True] + [0] * (K - 1)}]), r"labels\[0\] \(Medical material\) is true"),
    (json.dumps([{**_GOOD, "labels": "0" * K}]), "labels must be a list"),
    (json.dumps([{"outputs": []}]), "without outputs"),
])
def test_malformed_files_are_refused_naming_file_and_entry(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        vlm3d.read_vlm3d(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_labels_csv_of_the_challenge_and_of_ct_rate(tmp_path):
    gt, _ = _random_pair(4)
    challenge = pd.DataFrame(gt.astype(float), columns=FINDINGS)
    challenge.insert(0, "AccessionNo", [f"id{i}.nii.gz" for i in range(4)])
    challenge.to_csv(tmp_path / "ground_truth.csv", index=False)
    got = vlm3d.read_ground_truth(tmp_path / "ground_truth.csv")
    assert list(got.by_case) == [f"id{i}" for i in range(4)]
    assert np.array_equal(np.stack(list(got.by_case.values())), gt)

    ctrate = pd.DataFrame(gt, columns=FINDINGS).astype(object)
    ctrate.insert(0, "VolumeName", [f"valid_{i}_a_1.nii.gz" for i in range(4)])
    ctrate["Findings_EN"] = "text"  # extra columns are fine
    path = tmp_path / "valid_predicted_labels.csv"
    path.write_text(ctrate.to_csv(index=False), encoding="utf-8-sig")
    assert list(vlm3d.read_ground_truth(path).by_case) == [f"valid_{i}_a_1" for i in range(4)]

    ctrate.loc[2, "Emphysema"] = "0.5"
    ctrate.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"line 4 \(valid_2_a_1.nii.gz\): Emphysema is '0.5'"):
        vlm3d.read_ground_truth(path)
    ctrate.drop(columns=["Emphysema", "VolumeName"]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="lacks column\\(s\\) AccessionNo or VolumeName, Emphysema"):
        vlm3d.read_ground_truth(path)


# -- scores ------------------------------------------------------------------------------------
def test_crg_from_its_definition_on_constructed_counts():
    # 5 cases × 18 findings; the truth has A = 7 positives; the prediction finds 4 of them
    # (TP 4, FN 3) and adds 2 false ones (FP 2).
    gt = np.zeros((5, K), dtype=int)
    pred = np.zeros((5, K), dtype=int)
    positives = [(0, 1), (0, 2), (1, 4), (2, 8), (3, 9), (4, 9), (4, 12)]
    for i, j in positives:
        gt[i, j] = 1
    for i, j in positives[:4]:
        pred[i, j] = 1
    pred[1, 0] = pred[3, 17] = 1
    tp, fn, fp, a, x = 4, 3, 2, 7, 5 * K
    r = (x - a) / (2 * a)
    u = (x - a) / 2
    s = r * tp - r * fn - fp
    expected = u / (2 * u - s)

    doc = vlm3d.score(_labels(pred), _labels(gt), resamples=20)
    assert doc["crg"] == pytest.approx({"TP": tp, "FN": fn, "FP": fp, "X": x, "A": a, "r": r, "U": u,
                                        "score_s": s, "CRG": expected})
    assert 0 < doc["crg"]["CRG"] < 1
    # A perfect prediction scores 1; every label positive (U = 0 and nothing false) the code's 0.
    assert vlm3d.score(_labels(gt), _labels(gt), resamples=5)["crg"]["CRG"] == pytest.approx(1.0)
    assert float(vlm3d.crg(a, 0, 0, a)) == 0.0
    # No positive in the truth: CRG undefined (the container raises), said in the table.
    empty = vlm3d.score(_labels(pred), _labels(np.zeros_like(gt)), resamples=5)
    assert empty["crg"]["CRG"] is None and empty["crg"]["FP"] == 6
    assert "| CRG | undefined |" in vlm3d.format_document(empty)


def test_macro_scores_match_scikit_learn_and_the_bootstrap_point():
    gt, pred = _random_pair()
    doc = vlm3d.score(_labels(pred), _labels(gt), resamples=200, seed=1)
    macro = doc["classification"]["macro"]
    assert macro["precision"] == pytest.approx(precision_score(gt, pred, average="macro", zero_division=0))
    assert macro["recall"] == pytest.approx(recall_score(gt, pred, average="macro", zero_division=0))
    assert macro["f1"] == pytest.approx(f1_score(gt, pred, average="macro", zero_division=0))
    assert macro["accuracy"] == pytest.approx(np.mean([accuracy_score(gt[:, j], pred[:, j]) for j in range(K)]))
    defined = [j for j in range(K) if 0 < gt[:, j].sum() < len(gt)]
    assert len(defined) == K - 2
    assert macro["auroc"] == pytest.approx(roc_auc_score(gt[:, defined], pred[:, defined], average="macro"))
    assert doc["classification"]["auroc_undefined"] == [FINDINGS[3], FINDINGS[5]]
    per = doc["classification"]["per_pathology"]
    assert per[3]["precision"] == per[3]["f1"] == 0 and per[3]["accuracy"] == 1 and per[5]["auroc"] is None

    # The bootstrap's count formulas give the same point values as scikit-learn.
    table = vlm3d.case_counts(gt, pred)
    stats = vlm3d._statistics(np.isin(np.arange(K), defined))
    points = bootstrap(table, stats, resamples=10)
    for key in ("precision", "recall", "f1", "accuracy", "auroc"):
        assert points[key].value == pytest.approx(macro[key]), key
    assert points["crg"].value == pytest.approx(doc["crg"]["CRG"])
    for key, (lo, hi) in doc["intervals"].items():
        value = doc["crg"]["CRG"] if key == "crg" else macro[key]
        assert lo <= value + 1e-9 and value - 1e-9 <= hi, key


def test_missing_predictions_count_as_all_zero_and_extra_ones_are_ignored():
    gt, pred = _random_pair(10)
    names = [f"case_{i}" for i in range(10)]
    partial = _labels(np.vstack([pred[:7], np.ones((2, K), int)]), names[:7] + ["other_1", "other_2"])
    zeros = pred.copy()
    zeros[7:] = 0
    a = vlm3d.score(partial, _labels(gt), resamples=30)
    b = vlm3d.score(_labels(zeros), _labels(gt), resamples=30)
    assert a["missing_predictions"]["count"] == 3 and a["ignored_predictions"]["count"] == 2
    assert a["classification"] == b["classification"] and a["crg"] == b["crg"]


# -- commands ----------------------------------------------------------------------------------
def _files(tmp_path):
    refs = ["Cardiomegaly is present. No pleural effusion.", "Bilateral pleural effusion is present.",
            "A nodule is seen in the right upper lobe.", "Emphysema in both lungs. Atelectasis at the left base."]
    gens = ["Cardiomegaly is present.", "No pleural effusion.", "A nodule is seen in the right upper lobe.",
            "Emphysema in both lungs."]
    names = [f"valid_{i}_a_1.nii.gz" for i in range(8)]
    refs, gens = refs * 2, gens * 2
    truth = vlm3d.entries_for(names, refs, vlm3d.extract_labels(refs))
    sub = vlm3d.entries_for(names, gens, vlm3d.extract_labels(gens))
    return (vlm3d.write_vlm3d(sub, tmp_path / "sub.json"), vlm3d.write_vlm3d(truth, tmp_path / "gt.json"),
            sub, truth)


def test_metrics_vlm3d_command_prints_the_table_with_its_card(tmp_path, capsys):
    sub_path, gt_path, sub, truth = _files(tmp_path)
    args = ["metrics", "--vlm3d", str(sub_path), "--ground-truth", str(gt_path), "--resamples", "50",
            "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "VLM3D challenge, reportgen_evaluation @ forithmus/VLM3D-Dockers" in printed
    expected = vlm3d.score(vlm3d.labels_of(sub, "s"), vlm3d.labels_of(truth, "t"), resamples=50)
    assert f"| CRG | {expected['crg']['CRG']:.4f} |" in printed
    assert f"| Macro F1 | {expected['classification']['macro']['f1']:.4f} |" in printed
    doc = json.loads((tmp_path / "eval" / vlm3d.METRICS_FILE).read_text())
    assert doc["crg"] == pytest.approx(expected["crg"]) and doc["n_cases"] == 8

    # The same labels as a challenge-style ground_truth.csv give the same scores.
    csv = pd.DataFrame([e.labels for e in truth], columns=FINDINGS)
    csv.insert(0, "AccessionNo", [e.input_image_name for e in truth])
    csv.to_csv(tmp_path / "ground_truth.csv", index=False)
    assert main(["metrics", "--vlm3d", str(sub_path), "--ground-truth", str(tmp_path / "ground_truth.csv"),
                 "--resamples", "50"]) == 0
    assert f"| CRG | {expected['crg']['CRG']:.4f} |" in capsys.readouterr().out


def test_metrics_vlm3d_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    sub_path, gt_path, *_ = _files(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"input_image_name": "x", "report": "r", "labels": [0, 1]}]))
    assert main(["metrics", "--vlm3d", str(bad), "--ground-truth", str(gt_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "entry 0 (x): 2 labels, expected 18" in err
    assert main(["metrics", "--vlm3d", str(sub_path)]) == 1
    assert "--vlm3d needs --ground-truth" in capsys.readouterr().err
    assert main(["metrics", "--out", str(tmp_path / "e")]) == 1
    assert "needs --predictions" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_evaluate_format_vlm3d_writes_the_submission_beside_the_normal_outputs(training_setup, trained_v3_run,
                                                                               tmp_path, capsys):
    from engine.data import CTRateDataset

    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(trained_v3_run), "--data", str(training_setup["data"]), "--cache",
            str(training_setup["cache"]), "--split", "test", "--out", str(out), "--format", "vlm3d",
            "--max-new-tokens", "6", "--no-bertscore", "--no-meteor", "--resamples", "50", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| metric | value | 95% CI |" in printed and "VLM3D challenge, reportgen_evaluation" in printed
    for name in ("predictions.csv", "metrics.json", vlm3d.SUBMISSION_FILE, vlm3d.GROUND_TRUTH_FILE, vlm3d.METRICS_FILE):
        assert (out / name).is_file(), name

    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    submission = vlm3d.read_vlm3d(out / vlm3d.SUBMISSION_FILE)
    assert [e.input_image_name for e in submission] == [vlm3d.case_id(n) for n in predictions["VolumeName"]]
    assert [e.report for e in submission] == predictions["generated"].tolist()
    assert np.array_equal(np.array([e.labels for e in submission]).reshape(-1, K),
                          vlm3d.extract_labels(predictions["generated"].tolist()))
    # The ground truth: the references with the dataset's labels (as the challenge's ground_truth.csv).
    truth = vlm3d.read_vlm3d(out / vlm3d.GROUND_TRUTH_FILE)
    cases = {c.volume_name: c for c in CTRateDataset.open(training_setup["data"]).split("test")}
    assert [e.report for e in truth] == [cases[n].findings for n in predictions["VolumeName"]]
    assert [list(e.labels) for e in truth] == [cases[n].labels.astype(int).tolist() for n in predictions["VolumeName"]]

    # The written files scored by `rad3d metrics --vlm3d` give what evaluate wrote.
    written = json.loads((out / vlm3d.METRICS_FILE).read_text())
    assert json.loads((out / "metrics.json").read_text())["vlm3d"]["crg"] == written["crg"]
    assert "dataset's labels CSV" in written["ground_truth_labels"]["how"]
    assert main(["metrics", "--vlm3d", str(out / vlm3d.SUBMISSION_FILE), "--ground-truth",
                 str(out / vlm3d.GROUND_TRUTH_FILE), "--resamples", "50", "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / vlm3d.METRICS_FILE).read_text())
    assert again["crg"] == written["crg"] and again["classification"] == written["classification"]
    assert again["intervals"] == written["intervals"]


def test_ground_truth_from_a_dataset_folder_is_its_labels_csv(training_setup):
    """Only the asked split's cases: a case without a prediction counts as a miss."""
    from engine.data import resolve

    data = training_setup["data"]
    got = vlm3d.read_ground_truth(data)
    test_names = [c.volume_name for c in resolve(data, section=None).split("test")]
    table = pd.read_csv(data / "labels.csv").set_index("VolumeName", drop=False).loc[test_names]
    assert 0 < len(test_names) < len(pd.read_csv(data / "labels.csv"))
    assert list(got.by_case) == [vlm3d.case_id(n) for n in table["VolumeName"]]
    assert np.array_equal(np.stack(list(got.by_case.values())), table[list(FINDINGS)].to_numpy())
    assert "dataset's labels CSV" in got.how


def test_evaluate_format_is_checked():
    from training.evaluate import EvaluateConfig

    with pytest.raises(ConfigError, match="output format"):
        EvaluateConfig(run="r", data="d", cache="c", out="o", output_format="csv")
    with pytest.raises(ConfigError, match="lacks"):
        vlm3d.check_label_set(type(ct_rate())("other", ("Cardiomegaly",)))

