"""The inspect-like phantom domain: contrast-filled arteries, pulmonary embolism as a filling
defect on its stated side, CTPA reports whose findings agree with the labels and the truth, and
the default domain's output unchanged."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from engine.errors import ConfigError
from engine.labels import load_label_set
from engine.synth import generate_case
from engine.synth.canvas import Tissue
from engine.synth.config import SynthConfig, parse_prevalence
from engine.synth.ctpa import TEXT_ONLY
from engine.synth.ctpa_reports import write_ctpa_report
from engine.synth.writer import write_dataset
from study.findings import FindingExtractor, FindingStatus

DOMAIN = "inspect-like"


def _x_index_of_midline(case) -> int:
    return case.grid.to_voxel([0.0, 0.0, 0.0])[0]


@pytest.mark.parametrize("side", ["right", "left"])
def test_embolism_is_a_low_hu_defect_in_enhanced_arteries_on_its_side(side):
    pe = generate_case(11, {"Embolism": {"side": side, "level": "main"}}, 4.0, domain=DOMAIN, noise=False)
    clear = generate_case(11, None, 4.0, domain=DOMAIN, noise=False)
    # Contrast: the pulmonary trunk and the aorta are bright, as on a CTPA (unenhanced blood is 35-50 HU).
    trunk = pe.anatomy.pulmonary_arteries()[0]
    assert pe.hu[tuple(pe.grid.to_voxel((trunk.a + trunk.b) / 2))] > 280
    assert np.median(pe.hu[pe.tissue == Tissue.AORTA]) > 190
    assert pe.hu[tuple(pe.grid.to_voxel(pe.anatomy.heart_center))] > 190
    clot = pe.tissue == Tissue.EMBOLUS
    assert clot.sum() >= 10
    assert float(np.median(pe.hu[clot])) < 120  # a clot, not contrast
    assert float(np.median(clear.hu[clot])) > 250  # the same voxels are contrast without the clot
    xs = np.nonzero(clot)[0]
    mid = _x_index_of_midline(pe)
    assert (xs < mid).all() if side == "right" else (xs > mid).all()  # volume axis 0 runs to the patient's left
    truth = pe.truth[0]
    assert truth["finding"] == "Embolism" and truth["side"] == side and truth["level"] == "main"
    assert f"{side} main pulmonary artery" in pe.report.findings
    assert pe.labels["Embolism"] == 1 and sum(pe.labels.values()) == 1
    assert "No filling defect" in clear.report.findings or "no pulmonary embolism" in clear.report.findings
    # Only the clot differs between the two cases: every changed voxel is on its side, near its centre.
    changed = np.argwhere(pe.hu != clear.hu)
    assert (changed[:, 0] < mid).all() if side == "right" else (changed[:, 0] > mid).all()
    part = truth["parts"][0]
    dist = np.linalg.norm((changed - part["center_voxel"]) * pe.spacing, axis=1)
    assert dist.max() <= part["size_mm"] / 2 + part["width_mm"] + max(pe.spacing)


def test_ctpa_report_names_embolism_by_side_and_level():
    truth = [{"finding": "Embolism", "side": "bilateral", "level": "segmental",
              "location": "right lower lobe and left lower lobe segmental arteries"}]
    texts = set()
    for seed in range(6):
        r = write_ctpa_report(truth, np.random.default_rng(seed), {"slice_thickness_mm": 1.25})
        assert "right lower lobe and left lower lobe segmental arteries" in r.findings
        assert "bilateral pulmonary embolism, segmental level" in r.impressions
        texts.add(r.findings.split(".")[0])
    assert len(texts) == 2  # two phrasings
    clear = write_ctpa_report([], np.random.default_rng(0), {})
    assert "embolism" in (clear.findings + clear.impressions).lower()
    assert "contrast" in clear.technique or "CTA" in clear.technique


def test_inspect_like_dataset_labels_agree_with_truth_and_report(tmp_path):
    labels = load_label_set(DOMAIN)
    cfg = SynthConfig(n=4, seed=3, scale=10.0, domain=DOMAIN, normal_fraction=0.0,
                      prevalence=parse_prevalence(["all=0.35", "embolism=0.9"], DOMAIN))
    out = write_dataset(cfg, tmp_path / "ctpa", progress=False)
    table = pd.read_csv(out / "labels.csv")
    assert list(table.columns) == ["VolumeName", *labels.names]
    truth = json.loads((out / "phantom_truth.json").read_text())
    assert truth["domain"] == DOMAIN and truth["label_set"] == DOMAIN
    reports = pd.read_csv(out / "reports.csv").set_index("VolumeName")
    extractor = FindingExtractor(labels)
    assert table["Embolism"].sum() >= 2
    for _, row in table.iterrows():
        planted = {f["finding"]: f for f in truth["cases"][row.VolumeName]["findings"]}
        assert {n for n in labels.names if row[n] == 1} == set(planted)
        text_only = {n for n, f in planted.items() if f.get("text_only")}
        assert text_only == set(planted) & set(TEXT_ONLY)
        report = reports.loc[row.VolumeName]
        found = extractor.extract(f"{report.Findings_EN} {report.Impressions_EN}")
        assert {n for n, s in found.items() if s == FindingStatus.POSITIVE} == set(planted), row.VolumeName
        if "Embolism" in planted:
            assert planted["Embolism"]["side"] in report.Impressions_EN


def test_domain_bad_input():
    with pytest.raises(ConfigError, match="domain"):
        SynthConfig(n=2, domain="mri-like")
    with pytest.raises(ConfigError, match="unknown finding"):
        parse_prevalence(["embolism=0.5"])  # not a CT-RATE finding
    with pytest.raises(ConfigError, match="not in the inspect-like domain"):
        SynthConfig(n=2, domain=DOMAIN, prevalence={"Lung nodule": 0.5})
    with pytest.raises(ConfigError, match="flat layout"):
        write_dataset(SynthConfig(n=1, domain=DOMAIN), "/nonexistent/never", layout="ctrate", progress=False)


# Computed with main's code before the second domain existed (commit da09796): the default domain's
# files, volumes included, must not change by a byte (vqa.csv, added later by `rad3d synth`, has its own
# tests in tests/test_vqa.py and is left out here).
DEFAULT_DIGEST = "2b3c7581e74b347a896eddd4ac9cb71823e25e68f589e38215e289d4383c47f2"


def test_default_domain_output_is_unchanged(tmp_path):
    out = write_dataset(SynthConfig(n=3, seed=5, scale=8.0), tmp_path / "x", progress=False, vqa=False)
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(out)).encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == DEFAULT_DIGEST


def test_no_questions_about_another_domains_findings(tmp_path):
    """VQA items are made from CT-RATE-like truth; an inspect-like dataset gets none, and asking for
    them is one line, not questions with false answers."""
    from engine.errors import DatasetError
    from engine.synth.vqa import build_vqa

    out = write_dataset(SynthConfig(n=2, seed=3, scale=8.0, domain=DOMAIN), tmp_path / "i", progress=False)
    assert not (out / "vqa.csv").exists()
    with pytest.raises(DatasetError, match="inspect-like"):
        build_vqa(out)
