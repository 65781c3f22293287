"""Research tab: metrics with intervals from an evaluation folder's metrics.json, and the UMAP file."""

from __future__ import annotations

from ui.screens.research_tab import find_umap, metrics_tables

DOC = {"metrics": [
    {"key": "bleu4", "label": "BLEU-4", "group": "nlg", "value": 0.123449, "ci_low": 0.1, "ci_high": 0.15,
     "implementation": "pycocoevalcap"},
    {"key": "f1:Cardiomegaly", "label": "F1 Cardiomegaly", "group": "finding", "value": 0.5, "ci_low": 0.4,
     "ci_high": 0.6},
    {"key": "precision:Cardiomegaly", "label": "P", "group": "finding", "value": 0.7, "ci_low": 0.6, "ci_high": 0.8},
]}


def test_metrics_tables_split_report_and_finding_metrics():
    report, per_finding = metrics_tables(DOC)
    assert report.to_dict("records") == [{"metric": "BLEU-4", "value": 0.1234, "95% CI low": 0.1,
                                          "95% CI high": 0.15, "implementation": "pycocoevalcap"}]
    assert per_finding.to_dict("records") == [{"finding": "Cardiomegaly", "value": 0.5, "95% CI low": 0.4,
                                               "95% CI high": 0.6}]


def test_umap_file_is_found_when_present(tmp_path):
    assert find_umap(tmp_path) is None
    (tmp_path / "latents_umap.png").write_bytes(b"x")
    assert find_umap(tmp_path).name == "latents_umap.png"
    (tmp_path / "umap.html").write_text("<html></html>")
    assert find_umap(tmp_path).name == "umap.html"
