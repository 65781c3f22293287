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


def _evaluation(tmp_path, folder, variant, texts):
    import pandas as pd

    from cli import main
    from test_metrics_cli import REFS

    rows = [{"VolumeName": f"test_{i}_a_1.nii.gz", "reference": REFS[i % 4], "generated": texts[i % 4],
             "run": variant, "variant": variant, "seconds": 1.0} for i in range(40)]
    csv = tmp_path / f"{variant}.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    assert main(["metrics", "--predictions", str(csv), "--out", str(folder), "--no-bertscore", "--no-meteor",
                 "--resamples", "300"]) == 0
    return folder


def test_a_comparison_opens_side_by_side_with_intervals_and_the_paired_difference(tmp_path):
    """V-3 vs V-2 as `rad3d demo evaluate` writes it (eval/v3, eval/v2, eval/comparison.json): each
    run's own value and interval from its metrics.json, the paired difference from comparison.json,
    also after the folder was moved (as when the shipped evaluation is installed)."""
    import json
    import shutil

    import gradio as gr

    from cli import main
    from test_metrics_cli import BAD, GOOD
    from ui.evaluation_view import is_comparison, side_by_side
    from ui.screens.research_tab import build_research

    made = tmp_path / "made"
    _evaluation(tmp_path, made / "v2", "v2", BAD)
    _evaluation(tmp_path, made / "v3", "v3", GOOD)
    assert main(["compare", str(made / "v2"), str(made / "v3"), "--out", str(made), "--resamples", "300"]) == 0
    shutil.copytree(made, tmp_path / "installed")
    shutil.rmtree(made)
    folder = tmp_path / "installed"
    assert is_comparison(folder) and not is_comparison(folder / "v3")

    view = side_by_side(folder)
    assert list(view.report_level.columns) == ["metric", "V-2", "V-3", "V-3 − V-2", "p"]
    own = {m["key"]: m for m in json.loads((folder / "v3" / "metrics.json").read_text())["metrics"]}
    paired = {m["key"]: m for m in json.loads((folder / "comparison.json").read_text())["metrics"]}
    row = view.report_level.set_index("metric").loc[own["f1_macro"]["label"]]
    m = own["f1_macro"]
    assert row["V-3"] == f"{m['value']:.3f} ({m['ci_low']:.3f}–{m['ci_high']:.3f})"
    d = paired["f1_macro"]
    assert d["difference"] > 0.3 and d["ci_low"] > 0  # the good reports beat the bad ones
    assert row["V-3 − V-2"] == f"{d['difference']:.3f} ({d['ci_low']:.3f}–{d['ci_high']:.3f})"
    assert row["p"] == f"{d['p_value']:.3f}"
    assert len(view.per_finding) == len([k for k in paired if k.startswith("f1:")]) > 0
    assert "40 cases" in view.title

    with gr.Blocks() as page:
        build_research(folder)
    ids = {getattr(b, "elem_id", None) for b in page.blocks.values()}
    assert {"research-status", "research-comparison", "research-per-finding"} <= ids


def test_a_missing_demo_evaluation_says_how_to_make_it(tmp_path):
    import gradio as gr

    from ui.screens.research_tab import build_research

    with gr.Blocks() as page:
        build_research(tmp_path / "demo" / "eval")
    texts = [getattr(b, "value", "") for b in page.blocks.values() if getattr(b, "elem_id", None) == "research-status"]
    assert len(texts) == 1 and "rad3d demo evaluate" in texts[0]


def test_the_research_tab_reads_an_evaluation_s_table(tmp_path):
    from study.consistency import write_table
    from test_consistency import hand_made_table
    from ui.screens.research_tab import consistency_view

    assert consistency_view(tmp_path) is None  # an evaluation without one: nothing shown
    write_table(hand_made_table(), tmp_path)
    line, shown = consistency_view(tmp_path)
    assert "4 cases" in line and "flags" in line.lower() and "0.833 on the drafts" in line
    row = shown.set_index("finding").loc["Pleural effusion"]
    assert row["report overrides classifier, incorrectly"] == 1 and row["F1 marked"] == 1.0
