"""`rad3d sweep`: a 2-point grid trains and evaluates each point, writes one table whose parameter
counts are `rad3d params` counts, and a rerun skips finished points."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from training.sweep import SweepPoint, sweep_points

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grid_drops_settings_a_variant_does_not_have():
    points = sweep_points(["a", "b"], ["v3", "linear", "linear-prefix", "r2gengpt"], [2, 5], [1, 4])
    assert points[:4] == [SweepPoint("a", "v3", 2, 1), SweepPoint("a", "v3", 2, 4),
                          SweepPoint("a", "v3", 5, 1), SweepPoint("a", "v3", 5, 4)]
    # linear: one-token prefix, no layers (r2gengpt is its alias); linear-prefix: prefix swept, no layers.
    assert points[4:7] == [SweepPoint("a", "linear", 1, None), SweepPoint("a", "linear-prefix", 2, None),
                           SweepPoint("a", "linear-prefix", 5, None)]
    assert len(points) == 14 and len({p.name for p in points}) == 14


def _params_count(capsys, decoder_config, prefix_len) -> int:
    import cli

    assert cli.main(["params", "--variant", "v2", "--decoder-config", str(decoder_config), "--prefix-len", str(prefix_len),
                     "--clip-len", str(prefix_len), "--layers", "1", "--d-embed", "32"]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("total"))
    return int(re.findall(r"[\d,]+", total)[0].replace(",", ""))


def test_two_point_sweep_writes_the_table_and_resumes(training_setup, tiny_gpt2_dir, tmp_path, capsys):
    import cli

    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(training_setup["data"]), "--cache", str(training_setup["cache"]),
            "--image-model", str(training_setup["image"]), "--decoders", f"tiny={tiny_gpt2_dir}", "--variants", "v2",
            "--prefix-lens", "2", "3", "--layers", "1", "--out", str(out), "--epochs", "1", "--batch-size", "8",
            "--lr", "1e-3", "--eval-limit", "2", "--max-new-tokens", "4", "--no-bertscore", "--no-meteor",
            "--resamples", "50", "--no-progress"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "| decoder | variant | prefix | layers | trainable | best val loss |" in printed

    table = pd.read_csv(out / "results.csv")
    assert table["point"].tolist() == ["tiny_v2_p2_l1", "tiny_v2_p3_l1"]
    assert table["prefix_len"].tolist() == [2, 3] and table["layers"].tolist() == [1, 1]
    expected = [_params_count(capsys, tiny_gpt2_dir / "config.json", p) for p in (2, 3)]
    assert table["trainable_params"].tolist() == expected and expected[0] < expected[1]
    assert (table["steps"] == 2).all() and table["best_val_loss"].gt(0).all()
    assert table["bleu_avg"].between(0, 1).all() and (table["eval_cases"] == 2).all()
    assert (table["bleu_avg_ci_low"] <= table["bleu_avg"]).all() and (table["bleu_avg"] <= table["bleu_avg_ci_high"]).all()
    for point in table["point"]:
        assert (out / "runs" / point / "config.json").is_file() and (out / "evals" / point / "metrics.json").is_file()

    # A rerun trains and evaluates nothing: logs and predictions stay as they were.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.csv")}
    assert cli.main(args) == 0
    assert capsys.readouterr().out.count("skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.csv")} == stamps
    assert pd.read_csv(out / "results.csv").equals(table)
