"""CT-RATE as released, end to end: a tree with CT-RATE's names (6 patients, train and valid, metadata
with rescale values; `rad3d synth --layout ctrate`) goes through `rad3d scan`, `embed`, `train` (one
step), `evaluate` and the app's case list with nothing but `--data ROOT`."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import cli
from engine.data import DataSource, resolve
from engine.data.splits import patient_id
from training_fixtures import write_image_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
RELEASE_FILES = [
    "dataset/metadata/train_metadata.csv", "dataset/metadata/validation_metadata.csv",
    "dataset/multi_abnormality_labels/train_predicted_labels.csv",
    "dataset/multi_abnormality_labels/valid_predicted_labels.csv",
    "dataset/radiology_text_reports/train_reports.csv", "dataset/radiology_text_reports/validation_reports.csv",
    "dataset/vqa.csv",  # ours, beside phantom_truth.json: questions about the phantoms (engine.vqa)
]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctrate") / "CT-RATE"
    assert cli.main(["synth", "--out", str(root), "--n", "8", "--seed", "0", "--scale", "8", "--layout", "ctrate"]) == 0
    return root


def test_synth_writes_the_released_tree(release):
    files = sorted(str(p.relative_to(release)) for p in release.rglob("*") if p.is_file())
    volumes = [f for f in files if f.endswith(".nii.gz")]
    assert [f for f in files if f.endswith(".csv")] == RELEASE_FILES
    for f in volumes:  # split/split_p/split_p_s/split_p_s_r.nii.gz
        split, patient, scan, name = f.split("/")[1:]
        stem = name.removesuffix(".nii.gz")
        assert stem.split("_")[0] == split and patient == "_".join(stem.split("_")[:2]) and scan == stem.rsplit("_", 1)[0]
    assert {f.split("/")[1] for f in volumes} == {"train", "valid"}
    assert len({patient_id(f) for f in volumes}) == 6

    reports = pd.read_csv(release / RELEASE_FILES[5])
    assert list(reports.columns) == ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN",
                                     "Impressions_EN"]
    assert all(n.startswith("valid_") for n in reports["VolumeName"])
    labels = pd.read_csv(release / RELEASE_FILES[2])
    from engine.labels import ct_rate

    assert list(labels.columns) == ["VolumeName", *ct_rate().names]
    meta = pd.read_csv(release / RELEASE_FILES[0], keep_default_na=False)
    assert len(meta.columns) == 44 and meta.columns[0] == "VolumeName" and meta.columns[-1] == "StudyDate"
    # The files hold raw values: HU = RescaleSlope * stored + RescaleIntercept gives air near -1000.
    for row in meta.itertuples():
        path = next(release.rglob(row.VolumeName))
        stored = np.asarray(nib.load(path).dataobj)
        hu = float(row.RescaleSlope) * stored + float(row.RescaleIntercept)
        assert stored.min() >= 0 and -1100 < np.percentile(hu, 1) < -900, row.VolumeName


@pytest.mark.slow
def test_scan_embed_train_evaluate_and_app_with_only_data_root(release, tiny_gpt2_dir, tmp_path, capsys):
    data = ["--data", str(release)]
    assert cli.main(["scan", *data, "--volumes"]) == 0
    out = capsys.readouterr().out
    assert "8 cases, 6 patients" in out
    assert "CT-RATE release: valid->test; valid carved from train by patient, seed 0, fraction 0.1" in out

    dataset = resolve(str(release))
    assert dataset.root == release / "dataset" and dataset.layout == "ct-rate"
    assert {c.volume_name for c in dataset.split("test")} == {"valid_1_a_1.nii.gz", "valid_1_b_1.nii.gz"}
    assert len({c.patient_id for c in dataset.split("valid")}) == 1
    assert all(c.rescale is not None for c in dataset)  # metadata read for every case
    assert resolve(release / "dataset").split_source == dataset.split_source  # the dataset/ folder works too

    image, cache, run, evaluation = (tmp_path / n for n in ("image", "cache", "run", "eval"))
    write_image_model(image)
    assert cli.main(["embed", *data, "--image-model", str(image), "--out", str(cache), "--workers", "0",
                     "--device", "cpu"]) == 0
    assert "8 embedded" in capsys.readouterr().out

    assert cli.main(["train", "--variant", "v3", *data, "--cache", str(cache), "--decoder", str(tiny_gpt2_dir),
                     "--image-model", str(image), "--out", str(run), "--max-steps", "1", "--batch-size", "2",
                     "--prefix-len", "2", "--clip-len", "2", "--layers", "1", "--heads", "4",
                     "--max-report-tokens", "16", "--no-progress"]) == 0
    assert json.loads((run / "train_config.json").read_text())["data"] == {
        "root": str(release), "reports_csv": None, "labels_csv": None, "metadata_csv": None, "splits_csv": None,
        "split_column": None}
    assert len(pd.read_csv(run / "metrics.csv")) == 1

    assert cli.main(["evaluate", "--run", str(run), *data, "--cache", str(cache), "--out", str(evaluation),
                     "--max-new-tokens", "4", "--no-bertscore", "--no-meteor", "--resamples", "20",
                     "--no-progress"]) == 0
    predictions = pd.read_csv(evaluation / "predictions.csv", keep_default_na=False)
    test = dataset.split("test")
    assert predictions["VolumeName"].tolist() == [c.volume_name for c in test]
    assert predictions["reference"].tolist() == [c.findings for c in test]

    from ui.cases import CaseBrowser
    from ui.commands.app import app_config

    args = cli.build_parser().parse_args(["app", *data, "--run", str(run), "--upload-dir", str(tmp_path / "up")])
    browser = CaseBrowser(app_config(args, None))  # data and run given: no demo
    order = {"test": 0, "valid": 1, "train": 2}  # the held-out test cases first, as the app lists them
    assert browser.case_names() == [c.volume_name for c in sorted(dataset.cases, key=lambda c: order[c.split])]
    text, labels = browser.reference("valid_1_b_1.nii.gz")
    assert text == dataset.case("valid_1_b_1.nii.gz").findings and len(labels) == 18
    volume = browser.volumes.get("valid_1_b_1.nii.gz")
    assert volume.hu.min() >= -1024 and np.percentile(volume.hu, 1) < -900

    # A refused dataset writes nothing: no cache, no run, no evaluation folder; each error names file and row.
    broken = tmp_path / "broken"
    shutil.copytree(release, broken)
    for csv, column, value in (("radiology_text_reports/validation_reports.csv", "Findings_EN", " "),
                               ("multi_abnormality_labels/valid_predicted_labels.csv", "Cardiomegaly", "2")):
        frame = pd.read_csv(broken / "dataset" / csv, dtype=str, keep_default_na=False)
        frame.loc[0, column] = value
        frame.to_csv(broken / "dataset" / csv, index=False)
    capsys.readouterr()
    bad = ["--data", str(broken)]
    attempts = {
        tmp_path / "cache2": ["embed", *bad, "--image-model", str(image), "--workers", "0", "--device", "cpu"],
        tmp_path / "run2": ["train", "--variant", "v3", *bad, "--cache", str(cache), "--decoder", str(tiny_gpt2_dir),
                            "--image-model", str(image), "--max-steps", "1", "--no-progress"],
        tmp_path / "eval2": ["evaluate", "--run", str(run), *bad, "--cache", str(cache), "--no-progress"],
    }
    for out, argv in attempts.items():
        assert cli.main([*argv, "--out", str(out)]) == 1 and not out.exists(), argv[0]
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    labels_problem = "valid_predicted_labels.csv: label values not 0/1: valid_1_a_1.nii.gz Cardiomegaly='2' (line 2)"
    blank_problem = "validation_reports.csv: blank Findings_EN (the findings section) in 1 rows: valid_1_a_1.nii.gz (line 2)"
    assert all(labels_problem in e for e in errors)
    assert blank_problem not in errors[0] and all(blank_problem in e for e in errors[1:])  # embed reads no text


def test_data_source_round_trips_json():
    source = DataSource("/data/CT-RATE", labels_csv="/x/labels.csv", split_column="fold")
    assert DataSource.coerce(json.loads(json.dumps(source.to_dict()))) == source
    assert DataSource.coerce(source.dumps()) == source
    assert DataSource.coerce("/data/flat") == DataSource("/data/flat")  # older records: a folder path
    from training.configs import TrainConfig

    config = TrainConfig(variant="v3", data=source.to_dict(), cache="c", decoder="l", image_model="i", out="o")
    assert config.data == source and TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    flat = TrainConfig(variant="v3", data="/data/flat", cache="c", decoder="l", image_model="i", out="o")
    assert flat.data.root == "/data/flat"


def test_only_the_test_split_is_ctrate_valid_with_the_same_volumes(release, tmp_path):
    part = tmp_path / "part"
    assert cli.main(["synth", "--out", str(part), "--n", "8", "--seed", "0", "--scale", "8", "--layout", "ctrate",
                     "--only-splits", "test"]) == 0
    written = sorted(p.relative_to(part) for p in part.rglob("*.nii.gz"))
    assert [p.name for p in written] == ["valid_1_a_1.nii.gz", "valid_1_b_1.nii.gz"]
    assert all((part / p).read_bytes() == (release / p).read_bytes() for p in written)
    assert sorted(p.name for p in part.rglob("*.csv")) == ["valid_predicted_labels.csv", "validation_metadata.csv",
                                                           "validation_reports.csv", "vqa.csv"]
    assert [c.split for c in resolve(str(part))] == ["test", "test"]
    assert cli.main(["synth", "--out", str(tmp_path / "v"), "--n", "8", "--layout", "ctrate",
                     "--only-splits", "valid"]) == 1
