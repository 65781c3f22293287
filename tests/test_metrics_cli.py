"""`rad3d metrics` and `rad3d compare` end to end, and predictions CSV validation."""

import json

import pandas as pd
import pytest

from cli import main
from engine.errors import DatasetError
from study.metrics.paired import compare_evaluations
from study.predictions import read_predictions

REFS = [
    "No pleural effusion was detected. Heart size is normal. Emphysematous changes are seen in both lungs.",
    "Bilateral pleural effusion is present. Cardiomegaly is present. No pulmonary nodule was observed.",
    "A 12 mm solid nodule is seen in the right upper lobe. No consolidation was detected.",
    "Subsegmental atelectasis is seen in the left lower lobe. Coronary artery calcification is seen.",
]
GOOD = [
    "No pleural effusion was observed. Heart size is normal. Emphysema is seen in both lungs.",
    "Pleural effusion is seen on both sides. The heart is enlarged. No pulmonary nodule was observed.",
    "A solid nodule is seen in the right upper lobe. No consolidation was detected.",
    "Atelectasis is seen in the left lower lobe. Coronary artery calcification is seen.",
]
BAD = ["Trachea and main bronchi are patent.", "", "No pulmonary nodule was observed.", "Bone structures are normal."]


def _write(path, gens, n=40, run="r1"):
    rows = [{"VolumeName": f"case_{i:03d}", "reference": REFS[i % 4], "generated": gens[i % 4], "run": run,
             "variant": "v3", "seconds": 1.0 + i % 3} for i in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_metrics_command_writes_evaluation_and_compare_works(tmp_path, capsys):
    good, bad = _write(tmp_path / "good.csv", GOOD), _write(tmp_path / "bad.csv", BAD, run="r0")
    for csv, out in ((good, "eval_good"), (bad, "eval_bad")):
        code = main(["metrics", "--predictions", str(csv), "--out", str(tmp_path / out), "--no-bertscore",
                     "--no-meteor", "--resamples", "400"])
        assert code == 0
    folder = tmp_path / "eval_good"
    for name in ("metrics.json", "metrics.md", "per_case.csv", "predictions.csv"):
        assert (folder / name).is_file()
    doc = json.loads((folder / "metrics.json").read_text())
    metrics = {m["key"]: m for m in doc["metrics"]}
    assert doc["n_cases"] == 40 and doc["label_set"]["name"] == "ct-rate"
    assert doc["text_convention"] == "r2gen" and doc["versions"]["pycocoevalcap"]
    card = doc["metric_card"]
    assert card["convention"] == "r2gen" and "clean_report_mimic_cxr" in card["convention_description"]
    assert card["averaging"]["bleu"].startswith("corpus") and card["averaging"]["rouge_l"] == "per-sample mean"
    assert "raw texts" in card["tokenisation"]["rouge_1, rouge_2"] and card["bertscore"] is None
    assert card["extractor"]["version"]
    for key in ("bleu_4", "rouge_l", "rouge_1", "rouge_2", "cider", "f1_macro", "green_style"):
        m = metrics[key]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], key
    assert metrics["f1_macro"]["value"] > 0.8
    assert {s["key"] for s in doc["skipped"]} == {"bertscore_f1", "meteor"}
    md = (folder / "metrics.md").read_text()
    assert "| BLEU-4 |" in md and "95% CI" in md and "GREEN-style approximation (rule-based), not GREEN" in md
    assert "Metric card: convention r2gen" in md and "finding extractor: rad3d FindingExtractor, version" in md
    assert "--green-model" not in md and "--radgraph-model" not in md  # no advice for options that do not exist
    assert len(pd.read_csv(folder / "per_case.csv")) == 40

    # The same run against itself: no difference; a clearly better run: significant.
    same = compare_evaluations(folder, folder, resamples=500)
    for m in same["metrics"]:
        if m["difference"] is not None:
            assert m["difference"] == 0 and m["ci_low"] == m["ci_high"] == 0
            assert m["p_value"] == pytest.approx(1.0)
    better = {m["key"]: m for m in compare_evaluations(tmp_path / "eval_bad", folder, resamples=500)["metrics"]}
    for key in ("bleu_4", "rouge_l", "f1_micro", "green_style"):
        assert better[key]["difference"] > 0 and better[key]["p_value"] < 0.01, key
    printed = capsys.readouterr().out
    assert "Metric card: convention r2gen" in printed and "averaging, bleu: corpus" in printed
    assert main(["compare", str(tmp_path / "eval_bad"), str(folder), "--out", str(tmp_path / "cmp"),
                 "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "| BLEU-4 |" in printed and "Metric card: convention r2gen" in printed
    assert (tmp_path / "cmp" / "comparison.json").is_file()


def test_compare_refuses_different_case_sets(tmp_path):
    for name, n in (("a", 12), ("b", 10)):
        csv = _write(tmp_path / f"{name}.csv", GOOD, n=n)
        assert main(["metrics", "--predictions", str(csv), "--out", str(tmp_path / name), "--no-bertscore",
                     "--no-meteor", "--resamples", "50"]) == 0
    with pytest.raises(DatasetError, match=r"case sets differ; 2 case\(s\) only in .*a: case_010, case_011"):
        compare_evaluations(tmp_path / "a", tmp_path / "b", resamples=10)


def test_convention_flag_and_compare_refuses_different_conventions(tmp_path, capsys):
    csv = _write(tmp_path / "p.csv", GOOD, n=8)
    for convention in ("r2gen", "raw"):
        assert main(["metrics", "--predictions", str(csv), "--out", str(tmp_path / convention), "--no-bertscore",
                     "--no-meteor", "--resamples", "20", "--convention", convention]) == 0
    raw = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    r2gen = json.loads((tmp_path / "r2gen" / "metrics.json").read_text())
    assert raw["metric_card"]["convention"] == "raw" and raw["text_convention"] == "raw"
    value = lambda doc, key: next(m["value"] for m in doc["metrics"] if m["key"] == key)  # noqa: E731
    assert value(raw, "bleu_4") != value(r2gen, "bleu_4")  # the convention changes the n-gram metrics ...
    assert value(raw, "rouge_1") == value(r2gen, "rouge_1")  # ... not ROUGE-1/2, always on the raw texts
    with pytest.raises(DatasetError, match=r"text conventions differ \('r2gen' in .*r2gen, 'raw' in .*raw\)"):
        compare_evaluations(tmp_path / "r2gen", tmp_path / "raw", resamples=10)
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "r2gen"), str(tmp_path / "raw")]) == 1
    assert "text conventions differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["metrics", "--predictions", str(csv), "--out", str(tmp_path / "x"), "--convention", "ptb"])


def test_malformed_predictions_exit_1_naming_file(tmp_path, capsys):
    csv = tmp_path / "preds.csv"
    csv.write_text("VolumeName,reference,generated,run,variant\n"
                   "a,No effusion.,No effusion.,r,v\n"
                   "a,No effusion.,,r,v\n"
                   "b,,text,r,v\n")
    code = main(["metrics", "--predictions", str(csv), "--out", str(tmp_path / "e"), "--no-bertscore", "--no-meteor"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert str(csv) in err and "lines 2, 3: a repeated" in err and "line 4 (b): empty reference" in err
    with pytest.raises(DatasetError, match="lacks column"):
        (tmp_path / "x.csv").write_text("VolumeName,reference\na,b\n")
        read_predictions(tmp_path / "x.csv")


def test_missing_generated_text_is_empty_string(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("VolumeName,reference,generated,run,variant,seconds\na,No effusion.,,r,v,2.5\n")
    df = read_predictions(csv)
    assert df.loc[0, "generated"] == "" and df.loc[0, "seconds"] == 2.5
