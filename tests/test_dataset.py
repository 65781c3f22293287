"""CT-RATE-format dataset reader, patient splits, and `rad3d scan`."""

import numpy as np
import pandas as pd
import pytest

import cli
from conftest import chest_phantom, lps_affine, write_nifti
from engine.data import CTRateDataset, DataSource, patient_id, resolve, split_by_patient
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


# -- CT-RATE's released tree ------------------------------------------------------------------------------

TRAIN = [f"train_{p}_a_1.nii.gz" for p in range(1, 11)] + ["train_3_a_2.nii.gz", "train_3_b_1.nii.gz"]
VALID = ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz", "valid_2_a_2.nii.gz"]
REPORTS = ("radiology_text_reports", {"train": "train_reports.csv", "valid": "validation_reports.csv"})
LABEL_FILES = ("multi_abnormality_labels", {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"})
METADATA = ("metadata", {"train": "train_metadata.csv", "valid": "validation_metadata.csv"})


def make_release(root, *, train=TRAIN, valid=VALID, labels=LABEL_FILES, encoding="utf-8", fixed=False):
    """CT-RATE's tree under root/dataset: raw values (HU + 1024, RescaleIntercept -1024) as first released;
    `fixed`: the valid volumes in HU under valid_fixed/ (CT-RATE v2)."""
    hu = chest_phantom((16, 14, 10))
    ds = root / "dataset"
    for split, names in (("train", train), ("valid", valid)):
        for name in names:
            parts = name.removesuffix(".nii.gz").split("_")
            in_hu = fixed and split == "valid"
            folder = ds / (split + ("_fixed" if in_hu else "")) / "_".join(parts[:2]) / "_".join(parts[:3])
            folder.mkdir(parents=True, exist_ok=True)
            write_nifti(folder / name, (hu if in_hu else hu + 1024).astype(np.int16), lps_affine((1.0, 1.0, 2.0)))
        files = {"reports": pd.DataFrame({
            "VolumeName": names, "ClinicalInformation_EN": "Not given.", "Technique_EN": "Non-contrast chest CT.",
            "Findings_EN": [f"Findings of {n}." for n in names], "Impressions_EN": "Not given."})}
        lab = pd.DataFrame({"VolumeName": names})
        for j, label in enumerate(LABELS):
            lab[label] = [int((i + j) % 4 == 0) for i in range(len(names))]
        files["labels"] = lab
        files["metadata"] = pd.DataFrame({"VolumeName": names, "Manufacturer": "SIEMENS", "XYSpacing": "[0.75, 0.75]",
                                          "RescaleIntercept": -1024, "RescaleSlope": 1, "ZSpacing": 1.5})
        for kind, (folder, file_names) in (("reports", REPORTS), ("labels", labels), ("metadata", METADATA)):
            (ds / folder).mkdir(exist_ok=True)
            files[kind].to_csv(ds / folder / file_names[split], index=False, encoding=encoding)
    return root


def test_release_tree_splits_by_ctrate_with_valid_carved_from_train(tmp_path):
    ds = CTRateDataset.open(make_release(tmp_path))
    assert ds.layout == "ct-rate" and ds.root == tmp_path / "dataset" and len(ds) == len(TRAIN) + len(VALID)
    assert [c.volume_name for c in ds.split("test")] == VALID  # CT-RATE's valid is our held-out test
    carved = ds.split("valid")
    assert len({c.patient_id for c in carved}) == 1  # 10% of 10 train patients, all their volumes
    patient = carved[0].patient_id
    assert {c.volume_name for c in carved} == {n for n in TRAIN if patient_id(n) == patient}
    assert all(c.split == "train" for c in ds if c.volume_name.startswith("train_") and c.patient_id != patient)
    assert ds.split_source == "CT-RATE release: valid->test; valid carved from train by patient, seed 0, fraction 0.1"
    # the dataset/ folder itself, the same dataset; another seed carves another patient
    assert [c.split for c in CTRateDataset.open(tmp_path / "dataset")] == [c.split for c in ds]
    others = {CTRateDataset.open(tmp_path, split_seed=s).split("valid")[0].patient_id for s in range(1, 6)}
    assert others - {patient}
    # the metadata rescale is applied to the raw values, spacing from the CSV, voxels as stored
    vol = ds.load_volume("valid_2_a_2.nii.gz")
    np.testing.assert_array_equal(vol.hu, chest_phantom((16, 14, 10)))
    assert vol.spacing_mm == (0.75, 0.75, 1.5)


def test_partial_download_keeps_the_volumes_present(tmp_path):
    make_release(tmp_path)
    next((tmp_path / "dataset" / "train").rglob("train_7_a_1.nii.gz")).unlink()
    ds = CTRateDataset.open(tmp_path)
    assert "train_7_a_1.nii.gz" not in {c.volume_name for c in ds}
    assert any("1 of 15 volumes listed in train_reports.csv + validation_reports.csv are not under" in n for n in ds.notes)


def test_either_label_file_name_bom_and_extra_columns(tmp_path):
    flat_names = {s: f"dataset_multi_abnormality_labels_{s}_predicted_labels.csv" for s in ("train", "valid")}
    make_release(tmp_path, labels=("multi_abnormality_labels", flat_names), encoding="utf-8-sig")
    reports = tmp_path / "dataset" / "radiology_text_reports" / "validation_reports.csv"
    assert reports.read_bytes().startswith(b"\xef\xbb\xbfVolumeName")
    frame = pd.read_csv(reports, encoding="utf-8-sig").assign(Reviewer="A. Reader")  # an extra column
    frame.to_csv(reports, index=False, encoding="utf-8-sig")
    ds = CTRateDataset.open(tmp_path)
    assert ds.case("valid_1_a_1.nii.gz").findings == "Findings of valid_1_a_1.nii.gz."
    assert ds.case("valid_1_a_1.nii.gz").labels.tolist() == [float(j % 4 == 0) for j in range(18)]
    assert [p.name for p in ds.csv_paths["labels"]] == list(flat_names.values())


def _set_cell(path, row: int, column: str, value: str) -> None:
    """Rewrite one cell of a CSV, every other cell kept as written."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def test_every_release_problem_names_its_file_and_rows(tmp_path):
    make_release(tmp_path)
    ds = tmp_path / "dataset"
    _set_cell(ds / "radiology_text_reports" / "validation_reports.csv", 1, "Findings_EN", "  ")
    train_reports = ds / "radiology_text_reports" / "train_reports.csv"
    frame = pd.read_csv(train_reports, keep_default_na=False)
    pd.concat([frame, frame.iloc[[0]].assign(VolumeName="valid_1_a_1.nii.gz")]).to_csv(train_reports, index=False)
    _set_cell(ds / "multi_abnormality_labels" / "train_predicted_labels.csv", 4, "Emphysema", "yes")
    _set_cell(ds / "metadata" / "validation_metadata.csv", 2, "ZSpacing", "-1")
    stray = ds / "train" / "train_11" / "train_11_a" / "train_11_a_1.nii.gz"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(next(ds.rglob("train_1_a_1.nii.gz")).read_bytes())

    with pytest.raises(DatasetError) as err:
        CTRateDataset.open(tmp_path)
    problems = err.value.problems
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    assert ("train_reports.csv, validation_reports.csv: duplicate VolumeName valid_1_a_1.nii.gz "
            "(train_reports.csv line 14, validation_reports.csv line 2)") in text
    assert "validation_reports.csv: blank Findings_EN (the findings section) in 1 rows: valid_2_a_1.nii.gz (line 3)" in text
    assert "train_predicted_labels.csv: label values not 0/1: train_5_a_1.nii.gz Emphysema='yes' (line 6)" in text
    assert "validation_metadata.csv: unparseable rows: valid_2_a_2.nii.gz (line 4: " in text
    assert "1 volume files under" in text and "have no row in train_reports.csv + validation_reports.csv: train_11_a_1" in text
    # the impression section is what a run trained on impressions needs: the blank findings are no problem then
    with pytest.raises(DatasetError) as err:
        CTRateDataset.open(tmp_path, section="impression")
    assert len(err.value.problems) == 4


def test_ctrate_v2_fixed_volumes_are_read_as_stored_in_hu(tmp_path):
    ds = CTRateDataset.open(make_release(tmp_path, fixed=True))
    case = ds.case("valid_1_a_1.nii.gz")
    assert case.as_stored and case.rescale is None and "valid_fixed" in str(case.volume_path)
    vol = ds.load_volume(case)  # no second rescale: the metadata's -1024 is not applied again
    np.testing.assert_array_equal(vol.hu, chest_phantom((16, 14, 10)))
    assert not ds.case("train_1_a_1.nii.gz").as_stored


def test_split_column_and_csv_overrides(tmp_path):
    make_dataset(tmp_path)
    reports = pd.read_csv(tmp_path / "reports.csv", keep_default_na=False)
    reports["fold"] = ["train", "train", "valid", "test", "train", "TRAIN "]
    reports.to_csv(tmp_path / "reports.csv", index=False)
    ds = CTRateDataset.open(tmp_path, split_column="fold")
    assert [c.split for c in ds] == ["train", "train", "valid", "test", "train", "train"]
    assert ds.split_source == "column 'fold' of reports.csv"
    (tmp_path / "labels.csv").rename(tmp_path / "elsewhere.csv")
    source = DataSource(str(tmp_path), labels_csv=str(tmp_path / "elsewhere.csv"), split_column="fold")
    assert resolve(source).case(NAMES[0]).labels is not None
    reports.loc[1, "fold"] = "valid"  # train_1_a_2 apart from train_1_a_1
    reports.to_csv(tmp_path / "reports.csv", index=False)
    with pytest.raises(DatasetError, match=r"reports.csv: patient train_1 is in several splits \(train, valid\)"):
        resolve(source)


def test_scan_takes_data_and_overrides_and_names_rows_on_one_line(tmp_path, monkeypatch, capsys):
    make_release(tmp_path)
    code, out = _run_cli(["scan", "--data", str(tmp_path)], monkeypatch, capsys)
    assert code == 0 and "15 cases, 12 patients (CT-RATE release: valid->test" in out.out
    labels = tmp_path / "dataset" / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    pd.read_csv(labels).drop(columns=["Cardiomegaly"]).to_csv(tmp_path / "mine.csv", index=False)
    code, out = _run_cli(["scan", "--data", str(tmp_path), "--labels-csv", str(tmp_path / "mine.csv")],
                         monkeypatch, capsys)
    lines = out.err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "mine.csv: lacks label columns ['Cardiomegaly']" in lines[0]


def test_labels_of_another_label_set_are_refused_other_extra_columns_accepted(tmp_path):
    from engine.labels import LabelSet

    make_dataset(tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv").assign(AccessionNumber="A1")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert CTRateDataset.open(tmp_path).case(NAMES[0]).labels.shape == (18,)
    seventeen = LabelSet.from_dict({"name": "ct-rate-17", "findings": ct_rate().to_dict()["findings"][:17]})
    with pytest.raises(DatasetError, match=r"labels.csv: has columns not in label set 'ct-rate-17' that are "
                                           r"findings of another label set: \['Interlobular septal thickening'\]"):
        CTRateDataset.open(tmp_path, label_set=seventeen)
