"""`rad3d evaluate`: predictions for the split with the agreed columns, the reports the run really
generates for those cases, the metrics files, and refusals (label sets, mixed runs)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from engine.cache import EmbeddingCache
from engine.data import CTRateDataset
from engine.errors import ConfigError, DatasetError
from engine.generation import GenerationSettings
from engine.inference import InferenceSession
from training.configs import EvaluateConfig
from training.evaluate import PREDICTION_COLUMNS, evaluate_run

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--max-new-tokens", "6", "--no-bertscore", "--no-meteor", "--resamples", "50", "--no-progress"]


def test_evaluate_writes_predictions_and_metrics(training_setup, trained_v3_run, tmp_path, capsys):
    import cli

    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(trained_v3_run), "--data", str(training_setup["data"]), "--cache",
            str(training_setup["cache"]), "--split", "test", "--out", str(out), "--batch-size", "3", "--convention", "raw",
            "--guarded", *FAST]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "| metric | value | 95% CI |" in printed and "BLEU-4" in printed
    assert "Metric card: convention raw" in printed and "averaging, bleu: corpus" in printed

    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    # the run's domain guard (fitted by `rad3d train`) adds each case's distance and flag
    assert list(predictions.columns) == [*PREDICTION_COLUMNS, "domain_distance", "outside_domain", "guarded"]
    # --guarded: the draft unchanged, then the classifier's marks (study.consistency)
    assert all(g.startswith(d) for g, d in zip(predictions["guarded"], predictions["generated"]))
    assert (predictions["domain_distance"] >= 0).all() and "Domain guard: threshold" in printed
    test_cases = CTRateDataset.open(training_setup["data"]).split("test")
    assert predictions["VolumeName"].tolist() == [c.volume_name for c in test_cases]
    assert predictions["reference"].tolist() == [c.findings for c in test_cases]
    assert set(predictions["run"]) == {trained_v3_run.name} and set(predictions["variant"]) == {"v3"}
    assert (predictions["seconds"] > 0).all() and predictions["new_tokens"].between(0, 6).all()

    # Batches of 3 over 4 cases give what the run generates for each case alone (greedy).
    session = InferenceSession.load(trained_v3_run, device="cpu")
    cache = EmbeddingCache.open(training_setup["cache"])
    settings = GenerationSettings(max_new_tokens=6)
    for row in predictions.itertuples():
        entry = cache.get(row.VolumeName)
        alone = session.generate(torch.from_numpy(entry.latent)[None], torch.from_numpy(entry.logits)[None], settings)
        assert row.generated == alone.texts[0]

    doc = json.loads((out / "metrics.json").read_text())
    keys = {m["key"] for m in doc["metrics"]}
    assert {"bleu_1", "bleu_4", "bleu_avg", "rouge_l", "f1_macro", "green_style"} <= keys
    assert doc["n_cases"] == 4 and doc["generation"]["split"] == "test" and doc["generation"]["max_new_tokens"] == 6
    assert doc["text_convention"] == doc["metric_card"]["convention"] == "raw"
    # The classifier's AUROC from the cached logits against the labels, per finding present in both classes.
    from sklearn.metrics import roc_auc_score

    labels = np.stack([c.labels for c in test_cases])
    logits = np.stack([cache.get(c.volume_name).logits for c in test_cases])
    by_key = {m["key"]: m for m in doc["metrics"]}
    both = [j for j, name in enumerate(session.label_set.names) if 0 < labels[:, j].sum() < len(labels)]
    assert both and {f"auroc:{session.label_set.names[j]}" for j in both} | {"auroc_macro"} == {
        k for k in keys if k.startswith("auroc")}
    assert by_key["auroc_macro"]["value"] == pytest.approx(
        np.mean([roc_auc_score(labels[:, j], logits[:, j]) for j in both]), abs=1e-6)
    assert "Classifier macro AUROC" in printed
    assert (out / "metrics.md").is_file() and len(pd.read_csv(out / "per_case.csv")) == 4

    # The report-vs-classifier table (Table 5 over the split): every case × finding in one category; `rad3d
    # consistency` on the folder afterwards (the classifier on the cache's latents) finds the same.
    table = pd.read_csv(out / "consistency.csv")
    every = table.set_index("finding").loc["all findings"]
    assert every[["agreement", "follows_wrong_classifier", "overrides_correctly", "overrides_incorrectly"]].sum() == 4 * 18
    assert "Report vs classifier consistency (4 cases)" in printed
    assert cli.main(["consistency", "--eval", str(out), "--run", str(trained_v3_run), "--data", str(training_setup["data"]),
                     "--cache", str(training_setup["cache"]), "--out", str(tmp_path / "consistency")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "consistency" / "consistency.csv"), table)

    # The predictions carry the run's provenance beside them; the report card and `rad3d metrics` show it.
    recorded = json.loads((out / "provenance.json").read_text())
    assert recorded == {"run": trained_v3_run.name, "provenance": session.provenance.to_dict()}
    assert doc["provenance"] == session.provenance.to_dict() and session.provenance.known
    assert f"Trained on: {session.provenance.trained_on()}." in (out / "metrics.md").read_text()
    assert cli.main(["metrics", "--predictions", str(out / "predictions.csv"), "--out", str(tmp_path / "again"),
                     "--no-bertscore", "--no-meteor", "--resamples", "20"]) == 0
    assert f"Licence: {session.provenance.licence_statement()}" in capsys.readouterr().out
    assert json.loads((tmp_path / "again" / "provenance.json").read_text()) == recorded
    assert "Trained on: " in (tmp_path / "again" / "metrics.md").read_text()

    # Another run's predictions never go into the same folder.
    other = tmp_path / "other-run"
    shutil.copytree(trained_v3_run, other)
    with pytest.raises(ConfigError, match="predictions of another run"):
        evaluate_run(EvaluateConfig(run=str(other), data=str(training_setup["data"]), cache=str(training_setup["cache"]),
                                    out=str(out), bertscore=False, meteor=False, resamples=50), progress=False)


def test_evaluate_refuses_a_dataset_with_another_label_set(training_setup, trained_v3_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(training_setup["data"], data)
    labels = pd.read_csv(data / "labels.csv")
    labels.drop(columns=["Emphysema"]).to_csv(data / "labels.csv", index=False)
    with pytest.raises(DatasetError, match=r"lacks label columns \['Emphysema'\]"):
        evaluate_run(EvaluateConfig(run=str(trained_v3_run), data=str(data), cache=str(training_setup["cache"]),
                                    out=str(tmp_path / "eval"), limit=1, bertscore=False, meteor=False), progress=False)
    assert not (tmp_path / "eval").exists()
