"""FindingExtractor: phantom reports against planted labels, and negation/uncertainty traps."""

import numpy as np
import pytest

from engine.labels import ct_rate
from study.findings import EXTRACTOR_VERSION, FindingExtractor, FindingStatus
from study.metrics import clinical

P, N, U, M = (FindingStatus.POSITIVE, FindingStatus.NEGATIVE, FindingStatus.UNCERTAIN, FindingStatus.NOT_MENTIONED)


@pytest.fixture(scope="module")
def extractor():
    return FindingExtractor(ct_rate())


def test_phantom_reports_reach_planted_labels(extractor):
    from engine.synth import generate_case

    names = ct_rate().names
    rng = np.random.default_rng(7)
    truth, pred = [], []
    for seed in range(36):
        chosen = [n for n in names if rng.random() < 0.4]
        case = generate_case(1000 + seed, chosen, scale=24, noise=False)
        status = extractor.extract(case.report.findings + " " + case.report.impressions)
        truth.append([case.labels[n] for n in names])
        pred.append([status[n].value for n in names])
    truth, pred = np.array(truth, bool), clinical.positive(np.array(pred, object))
    tp, fp, fn = (truth & pred).sum(0), (pred & ~truth).sum(0), (truth & ~pred).sum(0)
    f1 = clinical.prf(tp, fp, fn)[2]
    assert np.isfinite(f1).all()
    assert clinical.macro(f1) >= 0.95, dict(zip(names, f1.round(2)))


@pytest.mark.parametrize("text, finding, status", [
    ("No pleural effusion was detected.", "Pleural effusion", N),
    ("Pericardial effusion-thickening was not observed.", "Pericardial effusion", N),
    ("Hiatal hernia is not detected.", "Hiatal hernia", N),
    ("Lungs are free of consolidation.", "Consolidation", N),
    ("The lungs are clear without consolidation.", "Consolidation", N),
    ("Emphysema is absent.", "Emphysema", N),
    ("Heart size is normal.", "Cardiomegaly", N),
    ("Heart contour, size are normal.", "Cardiomegaly", N),
    ("Cardiac size is within normal limits.", "Cardiomegaly", N),
    ("The heart is enlarged.", "Cardiomegaly", P),
    ("Possible small pleural effusion on the left.", "Pleural effusion", U),
    ("Findings suspicious for consolidation in the right lower lobe.", "Consolidation", U),
    ("Early bronchiectasis cannot be excluded.", "Bronchiectasis", U),
    ("This may represent atelectasis.", "Atelectasis", U),
    ("Subsegmental atelectasis is seen in the left lower lobe.", "Atelectasis", P),
    ("Ground-glass opacities are present in both lungs.", "Lung opacity", P),
    ("There is no change in the 6 mm nodule in the right upper lobe.", "Lung nodule", P),
    ("Thoracic esophagus calibre is normal; no hiatal hernia was seen.", "Hiatal hernia", N),
    ("Emphysematous changes are present in both lungs.", "Pleural effusion", M),
    # CT-RATE's own phrasing
    ("Wall calcifications were observed in the aorta and coronary arteries.", "Arterial wall calcification", P),
    ("Wall calcifications were observed in the aorta and coronary arteries.", "Coronary artery wall calcification", P),
    ("Sequela fibrotic density increases in the right lower lobe.", "Pulmonary fibrotic sequela", P),
    ("Sequela fibrotic density increases in the right lower lobe.", "Lung opacity", M),
    ("A 9 mm lymph node not in pathological size in the paratracheal area.", "Lymphadenopathy", N),
    ("Heart size increased.", "Cardiomegaly", P),
    ("Mediastinal main vascular structures, heart contour, size are normal.", "Cardiomegaly", N),
    ("A nodule is seen in the left lobe of the thyroid gland.", "Lung nodule", M),
])
def test_single_sentence_status(extractor, text, finding, status):
    assert extractor.extract(text)[finding] == status


def test_one_sentence_several_findings(extractor):
    s = extractor.extract("Atelectasis is seen in the left lower lobe and pleural effusion was not detected.")
    assert (s["Atelectasis"], s["Pleural effusion"]) == (P, N)
    s = extractor.extract("No consolidation, nodule or pleural effusion.")
    assert (s["Consolidation"], s["Lung nodule"], s["Pleural effusion"]) == (N, N, N)
    s = extractor.extract("Pleural and pericardial effusion were not detected.")
    assert (s["Pleural effusion"], s["Pericardial effusion"]) == (N, N)
    s = extractor.extract("Mild cardiomegaly, no pericardial effusion.")
    assert (s["Cardiomegaly"], s["Pericardial effusion"]) == (P, N)
    s = extractor.extract("Emphysema is seen, but bronchiectasis cannot be ruled out.")
    assert (s["Emphysema"], s["Bronchiectasis"]) == (P, U)


def test_report_level_aggregation_prefers_positive(extractor):
    s = extractor.extract("No new nodule. A 5 mm pulmonary nodule is seen in the right upper lobe. No pleural effusion.")
    assert s["Lung nodule"] == P and s["Pleural effusion"] == N and s["Emphysema"] == M
    assert list(s) == list(ct_rate().names)


def test_green_style_and_uncertain_policy():
    ref = np.array([["positive", "negative", "not mentioned", "positive"]], object)
    gen = np.array([["positive", "negative", "positive", "uncertain"]], object)
    c = clinical.case_counts(ref, gen, "positive")
    # matched: finding 0 (both positive), 1 (both negative), 3 (uncertain counts positive); error: 2 hallucinated.
    assert c["matched"][0] == 3 and c["errors"][0] == 1
    assert clinical.green_style(c["matched"], c["errors"])[0] == pytest.approx(0.75)
    c = clinical.case_counts(ref, gen, "negative")
    assert c["matched"][0] == 2 and c["errors"][0] == 2  # finding 3 is now omitted
    empty = clinical.case_counts(np.array([["not mentioned"]], object), np.array([["not mentioned"]], object))
    assert np.isnan(clinical.green_style(empty["matched"], empty["errors"])[0])


def test_version_and_mention_phrase_as_written(extractor):
    assert EXTRACTOR_VERSION and FindingExtractor.version == EXTRACTOR_VERSION
    text = "The Heart is mildly ENLARGED. Pericardial effusion-thickening was not observed."
    mentions = extractor.mentions(text)
    assert [(m.finding, m.status) for m in mentions] == [("Cardiomegaly", P), ("Pericardial effusion", N)]
    assert [m.phrase for m in mentions] == ["Heart is mildly ENLARGED", "Pericardial effusion"]
    assert all(m.phrase in text for m in mentions)
