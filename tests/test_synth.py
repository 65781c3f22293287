"""`rad3d synth`: determinism, the CT-RATE layout it writes, and reports that agree with labels."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cli import main
from engine.errors import ConfigError
from engine.labels import ct_rate
from engine.synth import generate_case
from engine.synth.config import SynthConfig, parse_prevalence
from engine.synth.vqa import generate_vqa
from engine.synth.writer import assign_splits, plan_dataset, write_dataset
from engine.vqa import read_vqa_csv
from study.findings import FindingExtractor

NAMES = list(ct_rate().names)
NEGATION = re.compile(r"\b(no|not|without|normal|unremarkable)\b", re.IGNORECASE)
# Which findings a sentence names: the extractor's vocabulary and anatomical scope (its synonyms
# include generic words such as "calcification" or "effusion" that substring matching would misread).
EXTRACTOR = FindingExtractor(ct_rate())


def named_findings(sentence: str) -> set[str]:
    return {m.finding for m in EXTRACTOR.mentions(sentence)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    assert main(["synth", "--out", str(out), "--n", "20", "--seed", "0", "--scale", "4"]) == 0
    return out


def positive_findings(text: str) -> set[str]:
    """Findings named by a synonym in a sentence that carries no negation."""
    found = set()
    for sentence in re.split(r"(?<=[.;])\s+", text):
        if NEGATION.search(sentence):
            continue
        found |= named_findings(sentence)
    return found


def negated_or_absent(text: str, name: str) -> bool:
    for sentence in re.split(r"(?<=[.;])\s+", text):
        if name in named_findings(sentence) and not NEGATION.search(sentence):
            return False
    return True


def test_generate_case_is_deterministic():
    a = generate_case(3, ["Lung nodule", "Pleural effusion"], scale=6)
    b = generate_case(3, ["Lung nodule", "Pleural effusion"], scale=6)
    c = generate_case(4, ["Lung nodule", "Pleural effusion"], scale=6)
    assert np.array_equal(a.hu, b.hu) and a.truth == b.truth and a.report == b.report
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)


def test_spacing_and_matrix_follow_scale():
    fine, coarse = generate_case(5, None, scale=2), generate_case(5, None, scale=4)
    assert fine.hu.shape[0] == 256 and coarse.hu.shape[0] == 128
    assert coarse.spacing[0] == pytest.approx(2 * fine.spacing[0], rel=1e-4)
    assert coarse.spacing[2] == pytest.approx(2 * fine.spacing[2], rel=1e-4)
    # Same patient in millimetres: the field of view does not change with scale.
    assert coarse.hu.shape[0] * coarse.spacing[0] == pytest.approx(fine.hu.shape[0] * fine.spacing[0], rel=1e-4)
    assert 0.6 * 2 <= fine.spacing[0] <= 0.9 * 2 and 1.0 * 2 <= fine.spacing[2] <= 5.0 * 2


def test_reports_agree_with_labels():
    rng = np.random.default_rng(0)
    for i in range(20):
        chosen = [n for n in NAMES if rng.random() < 0.3]
        case = generate_case(100 + i, chosen, scale=10)
        assert [n for n in NAMES if case.labels[n]] == chosen
        for section in (case.report.findings, case.report.impressions):
            positives = positive_findings(section)
            assert positives <= set(chosen), (positives - set(chosen), section)
        assert positive_findings(case.report.findings) == set(chosen), case.report.findings
        for name in NAMES:
            if name not in chosen:
                assert negated_or_absent(case.report.findings + " " + case.report.impressions, name)
        if not chosen:
            assert case.report.impressions in ("No acute pathology.", "No significant pathology was detected.")
        for t in case.truth:  # sizes and sides in the report come from the truth
            if t["finding"] == "Lung nodule":
                assert f"{int(round(t['size_mm']))} mm" in case.report.findings
                assert t["location"] in case.report.findings


def test_cli_writes_ct_rate_layout(dataset):
    files = sorted(dataset.glob("volumes/*/*/*.nii.gz"))
    assert len(files) == 20
    split_of = dict(pd.read_csv(dataset / "splits.csv").values)
    for f in files:  # volumes/<split>_<p>/<split>_<p>_<scan>/<split>_<p>_<scan>_<recon>.nii.gz
        stem = f.name.removesuffix(".nii.gz")
        split, p, s, r = re.fullmatch(r"(train|valid|test)_(\d+)_([ab])_(\d)", stem).groups()
        assert split == split_of[f.name]  # the name says the case's own split
        assert f.parent.name == f"{split}_{p}_{s}" and f.parent.parent.name == f"{split}_{p}"
    reports = pd.read_csv(dataset / "reports.csv")
    labels = pd.read_csv(dataset / "labels.csv")
    meta = pd.read_csv(dataset / "metadata.csv")
    splits = pd.read_csv(dataset / "splits.csv")
    assert list(reports.columns) == ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
    assert list(labels.columns) == ["VolumeName", *NAMES]
    assert set(labels[NAMES].to_numpy().ravel()) <= {0, 1} and labels[NAMES].dtypes.eq(np.int64).all()
    for col in ("VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing", "Manufacturer"):
        assert col in meta.columns
    assert list(splits.columns) == ["VolumeName", "split"]
    names = sorted(f.name for f in files)
    for df in (reports, labels, meta, splits):
        assert sorted(df["VolumeName"]) == names
    assert set(splits["split"]) <= {"train", "valid", "test"}
    truth = json.loads((dataset / "phantom_truth.json").read_text())
    assert truth["seed"] == 0 and sorted(truth["cases"]) == names
    for _, row in labels.iterrows():
        planted = {t["finding"] for t in truth["cases"][row["VolumeName"]]["findings"]}
        assert planted == {n for n in NAMES if row[n] == 1}
        text = reports.set_index("VolumeName").loc[row["VolumeName"]]
        assert positive_findings(text["Findings_EN"]) == planted


def test_vqa_csv_beside_the_reports(dataset):
    truth = json.loads((dataset / "phantom_truth.json").read_text())
    items = read_vqa_csv(dataset / "vqa.csv", truth["cases"])
    assert items == generate_vqa(truth) and {i.volume_name for i in items} == set(truth["cases"])


def test_volumes_read_back_as_plausible_hu(dataset):
    meta = pd.read_csv(dataset / "metadata.csv").set_index("VolumeName")
    labels = pd.read_csv(dataset / "labels.csv").set_index("VolumeName")
    for f in sorted(dataset.glob("volumes/*/*/*.nii.gz"))[:8]:
        img = nib.load(f)
        row = meta.loc[f.name]
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert img.get_data_dtype() == np.int16
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(gzip.decompress(f.read_bytes())))
        assert float(header["scl_slope"]) == 1.0 and float(header["scl_inter"]) == 0.0
        sx, sy = json.loads(row["XYSpacing"])
        np.testing.assert_allclose(img.header.get_zooms(), (sx, sy, row["ZSpacing"]), rtol=1e-6)
        assert row["RescaleSlope"] == 1 and row["RescaleIntercept"] == -1024
        hu = np.asarray(img.dataobj).astype(np.float32) * row["RescaleSlope"] + row["RescaleIntercept"]
        assert abs(np.median(hu[:8, :8, :]) + 1000) < 40  # air in the corner of the field of view
        if not labels.loc[f.name, ["Emphysema", "Mosaic attenuation pattern"]].any():
            nx, ny, nz = hu.shape
            centre = hu[nx // 5: 4 * nx // 5, ny // 5: 3 * ny // 5, nz // 4: 3 * nz // 4]  # lungs, not the table
            lungish = centre[(centre > -980) & (centre < -650)]
            assert abs(np.median(lungish) + 850) < 70  # -870..-830 by patient, denser posteriorly
        assert (hu < -1024).sum() == 0 and hu.max() < 3072


def test_patients_keep_one_split_and_some_have_several_volumes():
    cfg = SynthConfig(n=120, seed=1)
    plans = plan_dataset(cfg)
    assert len(plans) == 120 and len({p.name for p in plans}) == 120
    per_patient: dict[int, list] = {}
    for p in plans:
        per_patient.setdefault(p.patient, []).append(p)
    assert any(len({q.scan for q in v}) == 2 for v in per_patient.values())
    assert any(len([q for q in v if q.scan == "a"]) == 2 for v in per_patient.values())
    splits = assign_splits(plans, cfg)
    for v in per_patient.values():
        assert len({splits[q.name] for q in v}) == 1
    counts = pd.Series(list(splits.values())).value_counts()
    assert counts["train"] > counts["valid"] > 0 and counts["test"] > 0
    # Reconstructions of one scan share findings; prevalence is near its target.
    for v in per_patient.values():
        for scan in "ab":
            assert len({q.findings for q in v if q.scan == scan}) <= 1
    rate = np.mean([len(p.findings) for p in plans]) / len(NAMES)
    assert 0.2 < rate < 0.35


def test_same_seed_same_bytes(tmp_path):
    for d in ("a", "b"):
        write_dataset(SynthConfig(n=3, seed=5, scale=8), tmp_path / d, progress=False)
    for f in ("reports.csv", "labels.csv", "metadata.csv", "splits.csv", "phantom_truth.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    for f in (tmp_path / "a").glob("volumes/*/*/*.nii.gz"):
        other = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert np.array_equal(np.asarray(nib.load(f).dataobj), np.asarray(nib.load(other).dataobj))


def test_refuses_non_empty_dir_and_hu_flag(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["synth", "--out", str(out), "--n", "1", "--scale", "8"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--n", "2", "--scale", "8", "--hu", "--force", "--no-vqa",
                 "--prevalence", "all=0", "Lung_nodule=1", "--normal-fraction", "0"]) == 0
    assert (out / "keep.txt").exists() and not (out / "vqa.csv").exists()
    meta = pd.read_csv(out / "metadata.csv")
    assert (meta["RescaleIntercept"] == 0).all()
    labels = pd.read_csv(out / "labels.csv")
    assert labels["Lung nodule"].eq(1).all() and labels[[n for n in NAMES if n != "Lung nodule"]].eq(0).all().all()
    f = sorted(out.glob("volumes/*/*/*.nii.gz"))[0]
    raw = np.asarray(nib.load(f).dataobj)
    assert abs(np.median(raw[:6, :6, :]) + 1000) < 40


def test_prevalence_parsing(tmp_path):
    assert parse_prevalence(["all=0.1", "lung-nodule=0.5"])["Lung nodule"] == 0.5
    assert parse_prevalence("Cardiomegaly=0.2,emphysema=0.4") == {"Cardiomegaly": 0.2, "Emphysema": 0.4}
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"Pleural effusion": 0.6}))
    assert parse_prevalence([str(f)]) == {"Pleural effusion": 0.6}
    with pytest.raises(ConfigError, match="unknown finding"):
        parse_prevalence(["lung_tumour=0.3"])
    with pytest.raises(ConfigError):
        SynthConfig(n=3, prevalence={"Cardiomegaly": 1.5})
    with pytest.raises(ConfigError):
        generate_case(0, ["Lung nodule"], scale=8, noise=False) and generate_case(0, {"Lung nodule": {"lobe": "XYZ"}})


def test_dataset_loads_through_ctrate_reader(dataset):
    from engine.data.ctrate import CTRateDataset

    ds = CTRateDataset.open(dataset)
    assert len(ds) == 20
    truth = json.loads((dataset / "phantom_truth.json").read_text())["cases"]
    case = ds.cases[0]
    planted = {t["finding"] for t in truth[case.volume_name]["findings"]}
    assert {n for n, v in zip(NAMES, case.labels) if v == 1} == planted
    vol = ds.load_volume(case)
    assert abs(np.median(vol.hu[:8, :8, :]) + 1000) < 40
    assert vol.spacing_mm == pytest.approx(tuple(truth[case.volume_name]["spacing_mm"]), rel=1e-6)


def test_only_splits_writes_the_very_volumes_of_the_full_dataset(tmp_path):
    full = write_dataset(SynthConfig(n=8, seed=2, scale=8), tmp_path / "full", progress=False)
    part = write_dataset(SynthConfig(n=8, seed=2, scale=8), tmp_path / "test", progress=False, only_splits=("test",))
    splits = pd.read_csv(full / "splits.csv").set_index("VolumeName")["split"]
    wanted = sorted(n for n, s in splits.items() if s == "test")
    assert wanted and sorted(pd.read_csv(part / "splits.csv")["VolumeName"]) == wanted
    assert sorted(pd.read_csv(part / "labels.csv")["VolumeName"]) == wanted
    files = sorted(f.relative_to(part) for f in part.glob("volumes/*/*/*.nii.gz"))
    assert len(files) == len(wanted)
    for rel in files:
        assert np.array_equal(np.asarray(nib.load(part / rel).dataobj), np.asarray(nib.load(full / rel).dataobj))
    assert json.loads((part / "phantom_truth.json").read_text())["splits_written"] == ["test"]
    with pytest.raises(ValueError, match="unknown split"):
        write_dataset(SynthConfig(n=2, seed=2, scale=8), tmp_path / "bad", progress=False, only_splits=("tset",))
