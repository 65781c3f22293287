"""CT-RATE-format dataset reader, patient splits, and `rad3d scan`."""

import numpy as np
import pandas as pd
import pytest
from conftest import chest_phantom, lps_affine, write_nifti

import cli
from engine.data import CTRateDataset, patient_id, split_by_patient
from engine.errors import DatasetError
from engine.labels import ct_rate

LABELS = list(ct_rate().names)
NAMES = ["train_1_a_1.nii.gz", "train_1_a_2.nii.gz", "train_2_a_1.nii.gz", "train_3_b_1.nii.gz",
         "train_4_a_1.nii.gz", "train_5_a_1.nii.gz"]


def make_dataset(root, names=NAMES, *, metadata=False, splits=None, write=None):
    """Write a small dataset. With `metadata`, volumes store raw values (HU + 1024) as CT-RATE's first release."""
    hu = chest_phantom((16, 14, 10))
    for i, name in enumerate(names if write is None else write):
        folder = root / "volumes" / name.rsplit("_", 2)[0] / name.rsplit("_", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        data = (hu + 1024 + i).astype(np.int16) if metadata else hu + i
        write_nifti(folder / name, data, lps_affine((1.0, 1.0, 2.0)))
    pd.DataFrame({
        "VolumeName": names,
        "ClinicalInformation_EN": "Not given.",
        "Technique_EN": "Non-contrast chest CT.",
        "Findings_EN": [f"Finding text {i}." for i in range(len(names))],
        "Impressions_EN": ["Not given."] + [f"Impression {i}." for i in range(1, len(names))],
    }).to_csv(root / "reports.csv", index=False)
    labels = pd.DataFrame({"VolumeName": names})
    for j, label in enumerate(LABELS):
        labels[label] = [int((i + j) % 3 == 0) for i in range(len(names))]
    labels.to_csv(root / "labels.csv", index=False)
    if metadata:
        pd.DataFrame({"VolumeName": names, "RescaleSlope": 1, "RescaleIntercept": -1024,
                      "XYSpacing": "[0.75, 0.75]", "ZSpacing": 1.5}).to_csv(root / "metadata.csv", index=False)
    if splits:
        rows = pd.DataFrame({"VolumeName": list(splits), "split": list(splits.values())})
        rows.to_csv(root / "splits.csv", index=False)
    return root


def test_patient_id_and_split_by_patient():
    assert patient_id("train_12_a_2.nii.gz") == "train_12"
    assert patient_id("valid_7_b_1.nii") == "valid_7"
    assert patient_id("my_scan.nii.gz") == "my_scan"
    names = [f"train_{p}_{s}_{r}.nii.gz" for p in range(40) for s in "ab"[: 1 + p % 2] for r in (1, 2)]
    splits = split_by_patient(names, seed=3)
    assert splits == split_by_patient(list(reversed(names)), seed=3)  # deterministic, order-free
    assert splits != split_by_patient(names, seed=4)
    sides = {}
    for name, split in splits.items():
        sides.setdefault(patient_id(name), set()).add(split)
    assert all(len(s) == 1 for s in sides.values())  # no patient on two sides
    patients = {split: {patient_id(n) for n, s in splits.items() if s == split} for split in ("train", "valid", "test")}
    assert [len(p) for p in patients.values()] == [28, 6, 6]


def test_open_reads_cases_labels_and_volumes(tmp_path):
    ds = CTRateDataset.open(make_dataset(tmp_path))
    assert len(ds) == len(NAMES) and [c.volume_name for c in ds] == NAMES
    first = ds.case("train_1_a_1.nii.gz")
    assert first.patient_id == "train_1" and first.findings == "Finding text 0." and first.impression == ""
    assert first.report == "Finding text 0."
    assert first.labels.dtype == np.float32 and first.labels.shape == (18,)
    assert first.labels.tolist() == [float(j % 3 == 0) for j in range(18)]
    assert ds.case("train_1_a_2.nii.gz").split == first.split  # same patient, same side
    assert sum(len(ds.split(s)) for s in ("train", "valid", "test")) == len(NAMES)
    vol = ds.load_volume("train_2_a_1.nii.gz")  # no metadata: header spacing and orientation
    np.testing.assert_array_equal(vol.hu, chest_phantom((16, 14, 10)) + 2)
    assert vol.spacing_mm == (1.0, 1.0, 2.0)
    summary = ds.summary()
    assert summary["cases"] == 6 and summary["patients"] == 5


def test_metadata_rescale_and_spacing_are_applied(tmp_path):
    splits = {n: "train" for n in NAMES[:4]} | {NAMES[4]: "valid", NAMES[5]: "test"}
    ds = CTRateDataset.open(make_dataset(tmp_path, metadata=True, splits=splits))
    vol = ds.load_volume(ds.case("train_3_b_1.nii.gz"))
    np.testing.assert_array_equal(vol.hu, chest_phantom((16, 14, 10)) + 3)
    assert vol.spacing_mm == (0.75, 0.75, 1.5) and vol.meta["reoriented"] is False
    assert [c.volume_name for c in ds.split("valid")] == [NAMES[4]]


def test_explicit_ctrate_csv_names(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "reports.csv").rename(tmp_path / "train_reports.csv")
    (tmp_path / "labels.csv").rename(tmp_path / "train_predicted_labels.csv")
    ds = CTRateDataset.open(tmp_path, reports_csv=tmp_path / "train_reports.csv",
                            labels_csv=tmp_path / "train_predicted_labels.csv")
    assert len(ds) == len(NAMES)


def test_every_problem_is_reported_at_once(tmp_path):
    make_dataset(tmp_path, metadata=True, splits={n: "train" for n in NAMES[:-1]} | {NAMES[-1]: "test"},
                 write=NAMES[:-1])  # the last volume's file is missing
    reports = pd.read_csv(tmp_path / "reports.csv")
    pd.concat([reports, reports.iloc[[2]]]).to_csv(tmp_path / "reports.csv", index=False)  # duplicate row
    pd.read_csv(tmp_path / "labels.csv").drop(columns=["Emphysema"]).to_csv(tmp_path / "labels.csv", index=False)
    meta = pd.read_csv(tmp_path / "metadata.csv")
    meta.loc[1, "XYSpacing"] = "[about, 0.7]"
    meta.to_csv(tmp_path / "metadata.csv", index=False)
    splits = pd.read_csv(tmp_path / "splits.csv")
    splits.loc[1, "split"] = "valid"  # train_1_a_2 apart from train_1_a_1: leakage
    splits.to_csv(tmp_path / "splits.csv", index=False)

    with pytest.raises(DatasetError) as err:
        CTRateDataset.open(tmp_path)
    problems = "\n".join(err.value.problems)
    assert "reports.csv: duplicate VolumeName train_2_a_1.nii.gz" in problems
    assert "labels.csv: lacks label columns ['Emphysema']" in problems
    assert "have no file under" in problems and NAMES[-1] in problems
    assert "metadata.csv: unparseable rows: train_1_a_2.nii.gz" in problems
    assert "patient train_1 is in several splits (train, valid)" in problems
    assert len(err.value.problems) == 5


def test_label_values_and_row_sets(tmp_path):
    make_dataset(tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.loc[0, "Cardiomegaly"] = 2
    labels["Extra finding"] = 0
    labels = pd.concat([labels.iloc[1:], labels.iloc[[0]].assign(VolumeName="train_9_a_1.nii.gz")])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DatasetError) as err:
        CTRateDataset.open(tmp_path)
    problems = "\n".join(err.value.problems)
    assert "Extra finding" not in problems  # an extra column is accepted
    assert "labels.csv: label values not 0/1: train_9_a_1.nii.gz Cardiomegaly='2' (line 7)" in problems
    assert "1 volumes in reports.csv have no row in labels.csv: train_1_a_1.nii.gz" in problems
    assert "1 volumes in labels.csv have no row in reports.csv: train_9_a_1.nii.gz" in problems


def test_reports_csv_missing_columns(tmp_path):
    make_dataset(tmp_path)
    pd.read_csv(tmp_path / "reports.csv").drop(columns=["Findings_EN"]).to_csv(tmp_path / "reports.csv", index=False)
    with pytest.raises(DatasetError, match=r"reports.csv: missing columns \['Findings_EN'\]"):
        CTRateDataset.open(tmp_path)


def _run_cli(argv, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["engine.commands.scan"])  # this area's command only
    code = cli.main(argv)
    return code, capsys.readouterr()


def test_scan_command_bad_dataset_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    make_dataset(tmp_path, write=NAMES[1:])
    code, out = _run_cli(["scan", str(tmp_path)], monkeypatch, capsys)
    assert code == 1
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rad3d scan: error: ") and NAMES[0] in lines[0]


def test_scan_command_summary_and_volume_check(tmp_path, monkeypatch, capsys):
    make_dataset(tmp_path)
    code, out = _run_cli(["scan", str(tmp_path), "--volumes"], monkeypatch, capsys)
    assert code == 0
    assert "6 cases, 5 patients" in out.out and "Cardiomegaly" in out.out
    bad = next((tmp_path / "volumes").rglob("train_4_a_1.nii.gz"))
    bad.write_bytes(bad.read_bytes()[:200])
    code, out = _run_cli(["scan", str(tmp_path), "--volumes"], monkeypatch, capsys)
    assert code == 1 and "1 of 6 volumes are unusable" in out.err and "train_4_a_1.nii.gz" in out.err
