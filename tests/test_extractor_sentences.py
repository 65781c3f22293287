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


BASE = "Trachea and both main bronchi are open. Heart size is normal. No pleural effusion was detected."


def _row(statuses) -> np.ndarray:
    return np.array([[statuses[n].value for n in NAMES]], object)


def _single_finding_cases(signs):
    """Sentences that state exactly one finding, with a status in `signs`."""
    out = []
    for sentence, expected in CASES:
        stated = [(n, s) for n, s in expected.items() if s != FindingStatus.NOT_MENTIONED]
        if len(stated) == 1 and stated[0][1] in signs:
            out.append((sentence, stated[0][0]))
    return out


def test_added_finding_is_a_hallucination(extractor):
    """Every positive or hedged sentence of the set, added to a report without that finding, is one
    hallucination (clinical case_counts fp; uncertain counts as positive by default)."""
    cases = _single_finding_cases({FindingStatus.POSITIVE, FindingStatus.UNCERTAIN})
    assert len(cases) >= 150
    ref = extractor.extract(BASE)
    missed = []
    for sentence, finding in cases:
        counts = clinical.case_counts(_row(ref), _row(extractor.extract(BASE + " " + sentence)))
        if not (counts["fp"][0, NAMES.index(finding)] == 1 and counts["fp"].sum() == 1 and counts["fn"].sum() == 0):
            missed.append(f"{finding}: {sentence}")
    assert not missed, "\n".join(missed)


def test_removed_finding_is_an_omission(extractor):
    """Every positive sentence of the set, removed from a reference that had it, is one omission (fn)."""
    cases = _single_finding_cases({FindingStatus.POSITIVE})
    missed = []
    for sentence, finding in cases:
        ref, gen = extractor.extract(BASE + " " + sentence), extractor.extract(BASE)
        counts = clinical.case_counts(_row(ref), _row(gen))
        if not (counts["fn"][0, NAMES.index(finding)] == 1 and counts["fn"].sum() == 1 and counts["fp"].sum() == 0):
            missed.append(f"{finding}: {sentence}")
    assert not missed, "\n".join(missed)


def test_negated_or_out_of_scope_adds_no_finding(extractor):
    """Negated sentences and findings' words used of other organs add no hallucination."""
    quiet = (FindingStatus.NEGATIVE, FindingStatus.NOT_MENTIONED)
    cases = [s for s, exp in CASES if all(v in quiet for v in exp.values())]
    assert len(cases) >= 100
    ref = extractor.extract(BASE)
    flagged = [s for s in cases
               if clinical.case_counts(_row(ref), _row(extractor.extract(BASE + " " + s)))["fp"].sum() != 0]
    assert not flagged, "\n".join(flagged)
