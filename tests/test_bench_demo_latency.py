"""bench/demo_latency.py --run: the real-run mode times a trained run (here the tiny run fixture) on
one volume, transformers' generate against the former custom greedy loop, and checks both give the same tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from run_fixtures import SETTINGS, chest_like_volume  # noqa: F401

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def demo_latency():
    sys.path.insert(0, str(BENCH))  # the bench scripts import their siblings (_common, preprocess)
    try:
        import demo_latency

        yield demo_latency
    finally:
        sys.path.remove(str(BENCH))


def test_real_run_mode_times_both_paths_with_equal_tokens(demo_latency, tiny_run, tmp_path, capsys):
    from engine.inference import InferenceSession
    from engine.io import load_volume

    # CT-RATE-style raw values (HU + 1024), read right only with the CSV's rescale
    volume = chest_like_volume(2)
    raw = tmp_path / "raw.nii.gz"
    stored = np.round(volume.hu).astype(np.int16) + np.int16(1024)
    nib.save(nib.Nifti1Image(stored, np.diag([-3.0, -3.0, 5.0, 1.0])), raw)
    args = ["--run", str(tiny_run[0]), "--volume", str(raw), "--repeats", "1"]
    assert demo_latency.main(args + ["--rescale", "1", "-1024"]) == 0
    out = capsys.readouterr().out
    assert "transformers generate (project path)" in out and "reference loop (bench/greedy_reference)" in out
    assert "tokens verified equal" in out and "target 5 s" in out and "device cpu" in out

    # the tokens it reports are the session's own report of that volume
    session = InferenceSession.load(tiny_run[0], device="cpu")
    expected = session.report(load_volume(raw, rescale=(1.0, -1024.0), reorient=False))
    line = next(ln for ln in out.splitlines() if ln.startswith("tokens generated:"))
    assert line.startswith(f"tokens generated: {expected.n_tokens} ")
    assert expected.n_tokens <= SETTINGS.max_new_tokens
    assert ("ended at EOS" in line) == expected.finished
    assert line.endswith(f"report: {expected.report[:120]!r}")

    # without the rescale the raw file is refused by name, with one line and exit 1
    assert demo_latency.main(args) == 1
    assert "raw.nii.gz" in capsys.readouterr().err


def test_real_run_mode_needs_a_volume(demo_latency, tiny_run, capsys):
    with pytest.raises(SystemExit):
        demo_latency.main(["--run", str(tiny_run[0])])
    assert "--volume FILE or --data DIR" in capsys.readouterr().err


def test_real_run_mode_takes_the_first_test_case_of_a_dataset(demo_latency, tiny_run, tmp_path, capsys):
    import pandas as pd

    from engine.data import CTRateDataset
    from engine.inference import InferenceSession

    # raw stored values with CT-RATE's metadata.csv rescale; the train case comes first in the CSVs
    names = {"train_1_a_1.nii.gz": ("train", 3), "valid_2_a_1.nii.gz": ("test", 4)}
    (tmp_path / "volumes").mkdir()
    for name, (_, seed) in names.items():
        stored = np.round(chest_like_volume(seed).hu).astype(np.int16) + np.int16(1024)
        nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "volumes" / name)
    pd.DataFrame({"VolumeName": list(names), "Findings_EN": "No effusion.", "Impressions_EN": "Normal."}
                 ).to_csv(tmp_path / "reports.csv", index=False)
    pd.DataFrame({"VolumeName": list(names), "RescaleSlope": 1, "RescaleIntercept": -1024,
                  "XYSpacing": "[3.0, 3.0]", "ZSpacing": 5.0}).to_csv(tmp_path / "metadata.csv", index=False)
    pd.DataFrame({"VolumeName": list(names), "split": [s for s, _ in names.values()]}
                 ).to_csv(tmp_path / "splits.csv", index=False)

    assert demo_latency.main(["--run", str(tiny_run[0]), "--data", str(tmp_path), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "valid_2_a_1.nii.gz (first test case" in out and "tokens verified equal" in out
    dataset = CTRateDataset.open(tmp_path)
    expected = InferenceSession.load(tiny_run[0], device="cpu").report(dataset.load_volume("valid_2_a_1.nii.gz"))
    assert f"tokens generated: {expected.n_tokens} " in out and f"report: {expected.report[:120]!r}" in out
