"""BLEU, ROUGE and METEOR wrappers agree with the reference implementations called directly."""

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge
from rouge_score.rouge_scorer import RougeScorer

from study.bootstrap import bootstrap
from study.metrics.evaluate import build_statistics
from study.metrics.meteor import METEOR_STAT_COLUMNS, MeteorJar
from study.metrics.nlg import BLEU_STAT_COLUMNS, bleu_case_stats, corpus_bleu, rouge_l_scores, rouge_n_scores
from study.metrics.text import text_convention

normalize = text_convention("r2gen").prepare

REFS = [
    "Trachea and both main bronchi are open. No pleural effusion was detected. Heart size is normal.",
    "Bilateral pleural effusion is present, up to 25 mm thick. Cardiomegaly is present.",
    "A 12 mm solid nodule is seen in the right upper lobe. No consolidation was detected.",
    "Emphysematous changes are seen in both lungs. Coronary artery calcification is present.",
    "Plate-like atelectasis is present at the base of the left lower lobe.",
]
HYPS = [
    "Trachea and main bronchi are patent. No pleural effusion was observed. The heart size is normal.",
    "Pleural effusion is seen on both sides. The heart is enlarged.",
    "No pulmonary nodule was observed. Consolidation is seen in the right lower lobe.",
    "Emphysema is seen in both lungs.",
    "",
]


def test_bleu_matches_pycocoevalcap_corpus_bleu():
    hyps, refs = normalize(HYPS), normalize(REFS)
    expected, per_case = Bleu(4).compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)},
                                               verbose=0)
    stats = bleu_case_stats(hyps, refs)
    np.testing.assert_allclose(corpus_bleu(stats.sum(0)), expected, atol=1e-6)
    # Per-case statistics give pycocoevalcap's sentence BLEU too.
    np.testing.assert_allclose(corpus_bleu(stats), np.array(per_case).T, atol=1e-6)
    # The bootstrap's point value (BLEU from summed statistics) is the same corpus BLEU.
    import pandas as pd
    table = pd.DataFrame(stats, columns=BLEU_STAT_COLUMNS)
    s, t = build_statistics(table, [], meteor=None)
    est = bootstrap(t, s, resamples=50, seed=0)
    for k in range(4):
        assert est[f"bleu_{k + 1}"].value == pytest.approx(expected[k], abs=1e-6)
        assert est[f"bleu_{k + 1}"].ci_low <= est[f"bleu_{k + 1}"].ci_high


def test_rouge_matches_reference_implementations():
    hyps, refs = normalize(HYPS), normalize(REFS)
    expected_l, _ = Rouge().compute_score({i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    assert rouge_l_scores(hyps, refs).mean() == pytest.approx(expected_l, abs=1e-4)
    scorer = RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
    ours = rouge_n_scores(hyps, refs)
    for i, (h, r) in enumerate(zip(hyps, refs)):
        direct = scorer.score(r, h)
        assert ours["rouge_1"][i] == pytest.approx(direct["rouge1"].fmeasure, abs=1e-4)
        assert ours["rouge_2"][i] == pytest.approx(direct["rouge2"].fmeasure, abs=1e-4)
    assert ours["rouge_1"][0] > ours["rouge_1"][4] == 0.0


@pytest.mark.slow  # two METEOR jar start-ups
def test_meteor_aggregate_from_summed_stats_matches_pycocoevalcap():
    from pycocoevalcap.meteor.meteor import Meteor

    hyps, refs = normalize(HYPS), normalize(REFS)
    hyps.append(refs[0])  # a perfect segment: the jar's aggregate treats its chunks specially
    refs.append(refs[0])
    expected, expected_cases = Meteor().compute_score({i: [r] for i, r in enumerate(refs)},
                                                      {i: [h] for i, h in enumerate(hyps)})
    import pandas as pd
    with MeteorJar() as jar:
        raw = jar.case_stats(hyps, refs)
        np.testing.assert_allclose(jar.scores(raw), expected_cases, atol=1e-9)
        table = pd.DataFrame(raw, columns=METEOR_STAT_COLUMNS)
        for c in BLEU_STAT_COLUMNS:
            table[c] = 0.0
        s, t = build_statistics(table, [], meteor=jar)
        est = bootstrap(t, [x for x in s if x.key == "meteor"], resamples=20, seed=0)
    assert est["meteor"].value == pytest.approx(expected, abs=1e-9)
