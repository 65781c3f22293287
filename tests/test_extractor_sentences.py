"""The finding extractor on 340+ sentences in the style of real chest CT reports (written for rad3d,
tests/data/extractor_sentences.tsv): every one of the 18 CT-RATE findings stated positive, negated,
hedged and out of its organ. Figures printed per finding (run with -s to see them):

- status P/R/F1: a statement is the (finding, status) the extractor gives for a sentence (positive,
  negative or uncertain; 'not mentioned' is no statement). TP = statements equal to the expected
  one, FP = statements where none or another status was expected, FN = expected statements not
  made. Macro F1 over the 18 findings must reach 0.95.
- positive P/R: the same for 'positive' alone (what the clinical metric counts as a finding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.labels import ct_rate
from study.findings import FindingExtractor, FindingStatus
from study.metrics import clinical

DATA = Path(__file__).parent / "data" / "extractor_sentences.tsv"
KEYS = {"MM": "Medical material", "AWC": "Arterial wall calcification", "CM": "Cardiomegaly",
        "PCE": "Pericardial effusion", "CAC": "Coronary artery wall calcification", "HH": "Hiatal hernia",
        "LAP": "Lymphadenopathy", "EMP": "Emphysema", "ATL": "Atelectasis", "NOD": "Lung nodule",
        "OPA": "Lung opacity", "FIB": "Pulmonary fibrotic sequela", "PLE": "Pleural effusion",
        "MOS": "Mosaic attenuation pattern", "PBT": "Peribronchial thickening", "CON": "Consolidation",
        "BRO": "Bronchiectasis", "IST": "Interlobular septal thickening"}
SIGNS = {"+": FindingStatus.POSITIVE, "-": FindingStatus.NEGATIVE, "?": FindingStatus.UNCERTAIN}
NAMES = ct_rate().names


def load_cases() -> list[tuple[str, dict[str, FindingStatus]]]:
    cases = []
    for n, line in enumerate(DATA.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        sentence, labels = line.split("\t")
        expected = {name: FindingStatus.NOT_MENTIONED for name in NAMES}
        for item in labels.split():
            if item != "-":
                assert item[:-1] in KEYS and item[-1] in SIGNS, f"{DATA.name} line {n}: bad label {item!r}"
                expected[KEYS[item[:-1]]] = SIGNS[item[-1]]
        cases.append((sentence, expected))
    return cases


CASES = load_cases()


@pytest.fixture(scope="module")
def extractor():
    return FindingExtractor(ct_rate())


def _prf(tp, fp, fn):
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, f


def test_test_set_covers_every_finding_in_every_form():
    assert len(CASES) >= 300
    for name in NAMES:
        statuses = {exp[name] for _, exp in CASES}
        assert {FindingStatus.POSITIVE, FindingStatus.NEGATIVE, FindingStatus.UNCERTAIN} <= statuses, name
    # out-of-scope forms: sentences expecting nothing at all that still use a finding's vocabulary
    assert sum(all(s == FindingStatus.NOT_MENTIONED for s in exp.values()) for _, exp in CASES) >= 40


def test_extractor_sentences_macro_f1(extractor):
    counts = {name: np.zeros(6, int) for name in NAMES}  # status tp fp fn, positive tp fp fn
    wrong = []
    for sentence, expected in CASES:
        got = extractor.extract(sentence)
        for name in NAMES:
            e, g = expected[name], got[name]
            c = counts[name]
            said, meant = g != FindingStatus.NOT_MENTIONED, e != FindingStatus.NOT_MENTIONED
            c[0] += said and g == e
            c[1] += said and g != e
            c[2] += meant and g != e
            c[3] += g == e == FindingStatus.POSITIVE
            c[4] += g == FindingStatus.POSITIVE != e
            c[5] += e == FindingStatus.POSITIVE != g
            if g != e:
                wrong.append(f"{sentence!r}: {name} expected {e.value}, got {g.value}")
    print(f"\n{len(CASES)} sentences; {'finding':34s} status P/R/F1        positive P/R")
    f1s = []
    for name in NAMES:
        c = counts[name]
        p, r, f = _prf(*c[:3])
        pp, pr, _ = _prf(*c[3:])
        f1s.append(f)
        print(f"{name:34s} {p:5.2f} {r:5.2f} {f:5.2f}   {pp:5.2f} {pr:5.2f}")
    macro = float(np.nanmean(f1s))
    print(f"macro status F1 {macro:.3f}; {len(wrong)} wrong statuses:", *wrong, sep="\n  ")
    assert macro >= 0.95, "\n".join(wrong)


@pytest.mark.parametrize("form, sentence", [
    ("positive", "Moderate bilateral effusions."),
    ("degree between organ and finding", "The heart is mildly enlarged."),
    ("hedged", "A small hiatal hernia cannot be excluded."),
    ("umbrella term", "Calcific atherosclerotic changes are seen in the wall of the thoracic aorta."),
    ("synonym", "Pleuroparenchymal sequelae are seen at both apices."),
    ("hedged", "Findings suspicious for early bronchiectasis in the lingula."),
])
def test_added_finding_is_a_hallucination(extractor, form, sentence):
    reference = ("Trachea and both main bronchi are open. Heart size is normal. No pleural effusion. "
                 "Millimetric nonspecific nodules are seen in both lungs.")
    ref = extractor.extract(reference)
    gen = extractor.extract(reference + " " + sentence)
    row = lambda s: np.array([[s[n].value for n in NAMES]], object)  # noqa: E731
    counts = clinical.case_counts(row(ref), row(gen))
    assert counts["fp"].sum() == 1 and counts["fn"].sum() == 0, form
    assert counts["errors"][0] == 1


@pytest.mark.parametrize("finding, sentence", [
    ("Lung nodule", "Millimetric nonspecific nodules are seen in both lungs."),
    ("Arterial wall calcification", "Atheromatous plaques are present in the aortic arch."),
    ("Lymphadenopathy", "Lymph nodes with a short axis reaching 15 mm are observed in the subcarinal region."),
    ("Cardiomegaly", "Heart size increased."),
])
def test_removed_finding_is_an_omission(extractor, finding, sentence):
    rest = "Trachea and both main bronchi are open. No pleural effusion. Emphysematous changes in both lungs."
    row = lambda s: np.array([[s[n].value for n in NAMES]], object)  # noqa: E731
    ref = extractor.extract(rest + " " + sentence)
    gen = extractor.extract(rest)
    assert ref[finding] == FindingStatus.POSITIVE
    counts = clinical.case_counts(row(ref), row(gen))
    assert counts["fn"].sum() == 1 and counts["fp"].sum() == 0
    assert counts["fn"][0, NAMES.index(finding)] == 1


@pytest.mark.parametrize("sentence", [
    "A 12 mm nodule is seen in the left lobe of the thyroid gland.",
    "A subcutaneous nodule is present in the right back.",
    "Heart size is normal.",
    "No lymph node in pathological size and appearance was detected in the mediastinum.",
    "A coarse calcification is present in the right thyroid lobe.",
    "Subcutaneous emphysema is seen in the left chest wall.",
    "No pleural effusion, pericardial effusion or lymphadenopathy.",
])
def test_out_of_scope_or_negated_adds_no_finding(extractor, sentence):
    reference = "Trachea and both main bronchi are open. Emphysematous changes in both lungs."
    row = lambda s: np.array([[s[n].value for n in NAMES]], object)  # noqa: E731
    counts = clinical.case_counts(row(extractor.extract(reference)), row(extractor.extract(reference + " " + sentence)))
    assert counts["fp"].sum() == 0 and counts["fn"].sum() == 0
