"""The logit-quality curve: synthetic logits hit their target AUROC, replace the cached logits in training and
evaluation (and nowhere else), and `rad3d logit-curve` runs end to end, writes its table and figure, and skips
finished points on a rerun."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.synthetic_logits import SyntheticLogits, case_noise, expected_auroc, scale_for_auroc

pytestmark = pytest.mark.usefixtures("one_thread")


def _labels(n: int, prevalences: list[float], seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, len(prevalences))) < np.array(prevalences)).astype(int)


def _auroc_se(auroc: float, labels: np.ndarray) -> float:
    n1, n0 = int(labels.sum()), int(len(labels) - labels.sum())
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    return float(np.sqrt((auroc * (1 - auroc) + (n1 - 1) * (q1 - auroc**2) + (n0 - 1) * (q2 - auroc**2)) / (n1 * n0)))


@pytest.mark.parametrize("target", [0.6, 0.7, 0.8, 0.9, 0.95])
def test_logits_have_the_target_auroc_per_finding_and_macro(target):
    prevalences = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5]  # AUROC does not depend on prevalence
    labels = _labels(20_000, prevalences)
    names = [f"case_{i}" for i in range(len(labels))]
    logits = SyntheticLogits(target, seed=3).logits(names, labels)
    for j in range(labels.shape[1]):  # each finding within 4 standard errors (Hanley & McNeil 1982)
        assert abs(roc_auc_score(labels[:, j], logits[:, j]) - target) < 4 * _auroc_se(target, labels[:, j])
    macro = np.mean([roc_auc_score(labels[:, j], logits[:, j]) for j in range(labels.shape[1])])
    assert macro == pytest.approx(target, abs=0.01)


def test_auroc_one_orders_every_pair_and_the_scale_inverts():
    labels = _labels(5_000, [0.05, 0.3, 0.5])
    logits = SyntheticLogits(1.0).logits([f"c{i}" for i in range(len(labels))], labels)
    assert all(roc_auc_score(labels[:, j], logits[:, j]) == 1.0 for j in range(3))
    for target in (0.5, 0.6, 0.83, 0.99):
        assert expected_auroc(scale_for_auroc(target)) == pytest.approx(target, abs=1e-12)
    assert scale_for_auroc(0.5) == 0.0 and 4.0 < scale_for_auroc(1.0) < 4.5
    with pytest.raises(Exception, match="between 0.5 and 1"):
        SyntheticLogits(0.4)


def test_a_case_keeps_its_noise_whatever_the_order_and_level():
    labels = _labels(6, [0.5, 0.5])
    names = [f"v{i}" for i in range(6)]
    low, high = SyntheticLogits(0.6, seed=2), SyntheticLogits(0.9, seed=2)
    a = low.logits(names, labels)
    b = low.logits(names[::-1], labels[::-1])[::-1]
    np.testing.assert_array_equal(a, b)
    # Only the scale differs between levels: the noise is shared (common random numbers).
    np.testing.assert_allclose(high.logits(names, labels) - a, (high.scale - low.scale) * (2 * labels - 1), atol=1e-5)
    np.testing.assert_allclose(a[0], low.scale * (2 * labels[0] - 1) + case_noise("v0", 2, 2), atol=1e-6)
    assert not np.allclose(case_noise("v0", 2, 2), case_noise("v0", 2, 3))


def test_training_reads_the_synthetic_logits_and_the_cache_is_still_checked(training_setup, tiny_gpt2_dir, tmp_path):
    from engine.data import resolve
    from engine.errors import ConfigError
    from training.accelerate_utils import make_accelerator
    from training.connector_recipe import _connector_data
    from training_fixtures import train_config

    config = train_config(training_setup, tiny_gpt2_dir, tmp_path / "run")
    accelerator = make_accelerator(config.mixed_precision)
    real = _connector_data(config, accelerator)
    synthetic = SyntheticLogits(0.8, seed=5)
    data = _connector_data(config, accelerator, synthetic)
    dataset = resolve(config.data)
    for split, ours in ((real.train, data.train), (real.valid, data.valid)):
        labels = np.stack([dataset.case(n).labels for n in split.volume_names])
        np.testing.assert_array_equal(ours.logits.numpy(), synthetic.logits(split.volume_names, labels))
        assert not np.allclose(ours.logits.numpy(), split.logits.numpy())  # the cache's were replaced
        np.testing.assert_array_equal(ours.latents.numpy(), split.latents.numpy())  # the latents were not
    with pytest.raises(ConfigError, match="reads no logits"):
        _connector_data(train_config(training_setup, tiny_gpt2_dir, tmp_path / "v2", variant="v2"), accelerator,
                        synthetic)

    # The seam does not skip the check: a cache whose logits are not the classifier's is refused all the same.
    import shutil

    from engine.cache import EmbeddingCache

    paths = {k: tmp_path / k for k in training_setup}
    for k, src in training_setup.items():
        shutil.copytree(src, paths[k])
    cache = EmbeddingCache.open(paths["cache"])
    entry = cache.get("train_2_a_1.nii.gz")
    cache.put("train_2_a_1.nii.gz", entry.latent, entry.logits + 1.0)
    with pytest.raises(ConfigError, match="not the output of the classifier"):
        _connector_data(train_config(paths, tiny_gpt2_dir, tmp_path / "stale"), accelerator, synthetic)


def test_two_level_curve_writes_table_and_figure_and_resumes(training_setup, tiny_gpt2_dir, tmp_path, capsys):
    import cli

    out = tmp_path / "curve"
    args = ["logit-curve", "--data", str(training_setup["data"]), "--cache", str(training_setup["cache"]),
            "--image-model", str(training_setup["image"]), "--decoder", str(tiny_gpt2_dir), "--out", str(out),
            "--levels", "0.7", "1.0", "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--lr", "1e-3",
            "--prefix-len", "2", "--clip-len", "2", "--layers", "1", "--heads", "2", "--max-report-tokens", "16",
            "--max-new-tokens", "4", "--resamples", "50", "--no-png", "--no-progress"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "# Logit-quality curve" in printed and "Finding F1 (macro)" in printed

    table = pd.read_csv(out / "results.csv")
    assert table["point"].tolist() == ["v2", "v3-real", "v3-auroc-0.70", "v3-auroc-1.00"]
    assert table["kind"].tolist() == ["reference", "real", "synthetic", "synthetic"]
    by = table.set_index("point")
    assert by.loc["v3-auroc-1.00", "auroc"] == 1.0  # the evaluation scored the synthetic logits
    assert by.loc["v3-real", "auroc"] == pytest.approx(by.loc["v2", "auroc"])  # both the cache's own
    assert by.loc["v3-real", "auroc"] < 1.0
    for point in ("v3-real", "v3-auroc-0.70", "v3-auroc-1.00"):
        comparison = json.loads((out / "comparisons" / f"{point}.json").read_text())
        f1 = next(m for m in comparison["metrics"] if m["key"] == "f1_macro")
        assert by.loc[point, "diff_f1_macro"] == pytest.approx(f1["value_b"] - f1["value_a"])
        assert by.loc[point, "diff_f1_macro"] == pytest.approx(by.loc[point, "f1_macro"] - by.loc["v2", "f1_macro"])
        assert by.loc[point, "diff_f1_macro_ci_low"] <= by.loc[point, "diff_f1_macro"] <= \
            by.loc[point, "diff_f1_macro_ci_high"]
    notes = json.loads((out / "runs" / "v3-auroc-0.70" / "config.json").read_text())["notes"]["training"]
    assert notes["logits"]["target_auroc"] == 0.7 and notes["logits"]["kind"] == "synthetic"
    assert json.loads((out / "evals" / "v3-auroc-0.70" / "metrics.json").read_text())["logits"]["scale"] == \
        pytest.approx(scale_for_auroc(0.7))
    assert "logits" not in json.loads((out / "runs" / "v3-real" / "config.json").read_text())["notes"]["training"]
    html = (out / "logit_curve.html").read_text()
    assert "the image model's classifier" in html and "v3-auroc-0.70" in html
    progress = json.loads((out / "progress.json").read_text())
    assert progress["done"] == progress["total"] == 4
    assert all(p["state"] == "evaluated" and p["train_s"] > 0 and p["eval_s"] > 0 for p in progress["points"].values())

    # A rerun trains and evaluates nothing: predictions and logs stay as they were.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.csv")}
    assert cli.main(args) == 0
    assert capsys.readouterr().out.count("already: skipped") == 8
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.csv")} == stamps
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table)


def _curve_table() -> pd.DataFrame:
    """V-3 − V-2 of finding F1 at four synthetic AUROCs: behind, behind, ahead, ahead (interval above 0 at the last)."""
    rows = [{"point": "v2", "kind": "reference", "auroc": 0.71, "eval_cases": 40}]
    rows.append({"point": "v3-real", "kind": "real", "auroc": 0.71, "diff_f1_macro": -0.02,
                 "diff_f1_macro_ci_low": -0.05, "diff_f1_macro_ci_high": 0.01, "eval_cases": 40})
    for auroc, d, low in ((0.6, -0.04, -0.08), (0.7, -0.01, -0.05), (0.8, 0.03, -0.01), (0.9, 0.08, 0.02)):
        rows.append({"point": f"v3-auroc-{auroc:.2f}", "kind": "synthetic", "auroc": auroc, "diff_f1_macro": d,
                     "diff_f1_macro_ci_low": low, "diff_f1_macro_ci_high": d + 0.04, "eval_cases": 40})
    table = pd.DataFrame(rows)
    for m in ("green_style",):
        table[f"diff_{m}"], table[f"diff_{m}_ci_low"], table[f"diff_{m}_ci_high"] = -0.01, -0.02, 0.0
    return table


def test_crossover_is_read_between_the_points_where_v3_pulls_ahead():
    from study.logit_curve import crossover, crossover_sentence

    c = crossover(_curve_table(), "f1_macro")
    assert c["interpolated"] == pytest.approx(0.7 + 0.1 * 0.01 / 0.04)  # -0.01 at 0.7, +0.03 at 0.8
    assert c["first_significant"] == 0.9 and not c["ahead_at_lowest"]
    assert "0.725" in crossover_sentence(c) and "from AUROC 0.900 on" in crossover_sentence(c)
    never = crossover(_curve_table(), "green_style")
    assert never["interpolated"] is None and never["first_significant"] is None
    assert "not crossed" in crossover_sentence(never)


def test_research_tab_shows_the_curve_only_when_the_study_folder_has_one(tmp_path):
    import gradio as gr

    from ui.screens.research_tab import build_logit_curve

    with gr.Blocks() as empty:
        build_logit_curve(tmp_path / "none")
    assert not [b for b in empty.blocks.values() if isinstance(b, (gr.Plot, gr.Markdown))]
    _curve_table().to_csv(tmp_path / "results.csv", index=False)
    with gr.Blocks() as page:
        build_logit_curve(tmp_path)
    plots = [b for b in page.blocks.values() if isinstance(b, gr.Plot)]
    text = " ".join(str(b.value) for b in page.blocks.values() if isinstance(b, gr.Markdown))
    assert len(plots) == 1 and "AUROC ≈ 0.725" in text and "40 evaluated cases" in text
    figure = json.loads(plots[0].value["plot"])
    names = {trace.get("name") for trace in figure["data"]}
    assert names == {"synthetic logits (from the labels)", "the image model's classifier"}


@pytest.mark.slow  # plotly starts a headless Chromium through kaleido: ~10 s
def test_figure_is_written_as_html_and_png(tmp_path):
    pytest.importorskip("kaleido", reason="PNG export needs kaleido (pip install rad3d[figures])")
    from PIL import Image

    from study.logit_curve import write_curve

    written = write_curve(_curve_table(), tmp_path)
    if written["png"] is None:
        pytest.skip(written["png_note"])  # kaleido without a Chrome/Chromium on this machine
    with Image.open(tmp_path / "logit_curve.png") as png:
        assert png.size == (2200, 960)  # 1100 x 480 at scale 2
    assert "v3-auroc-0.90" in (tmp_path / "logit_curve.html").read_text()
    assert "crosses 0 at AUROC ≈ 0.725" in (tmp_path / "results.md").read_text()


def test_a_time_limit_stops_at_a_checkpoint_and_a_rerun_finishes(training_setup, tiny_gpt2_dir, tmp_path, capsys):
    import cli

    out = tmp_path / "curve"
    args = ["logit-curve", "--data", str(training_setup["data"]), "--cache", str(training_setup["cache"]),
            "--image-model", str(training_setup["image"]), "--decoder", str(tiny_gpt2_dir), "--out", str(out),
            "--levels", "0.9", "--no-real", "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--lr", "1e-3",
            "--prefix-len", "2", "--clip-len", "2", "--layers", "1", "--heads", "2", "--max-report-tokens", "16",
            "--max-new-tokens", "4", "--eval-limit", "2", "--resamples", "20", "--no-png", "--no-progress"]
    assert cli.main(args + ["--time-limit", "1e-6"]) == 0
    assert "v2: stopped at the time limit" in capsys.readouterr().out
    progress = json.loads((out / "progress.json").read_text())["points"]
    assert progress["v2"]["state"] == "pending" and progress["v2"]["step"] < progress["v2"]["total_steps"] == 2
    assert not (out / "results.csv").exists() and not (out / "evals").exists()
    assert cli.main(args) == 0
    assert pd.read_csv(out / "results.csv")["point"].tolist() == ["v2", "v3-auroc-0.90"]
    assert json.loads((out / "progress.json").read_text())["points"]["v2"]["step"] == 2
