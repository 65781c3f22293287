"""N-gram metrics on normalised text: BLEU-1..4 (pycocoevalcap, corpus-level), ROUGE-L
(pycocoevalcap), ROUGE-1/2 (rouge-score F-measure), CIDEr-D (pycocoevalcap).

BLEU is kept as per-case sufficient statistics (hypothesis length, reference length, n-gram
guesses and clipped matches) so that corpus BLEU of any bootstrap resample is a weighted sum
followed by `corpus_bleu`, with pycocoevalcap's own smoothing constants.
"""

from __future__ import annotations

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

BLEU_N = 4
# Column order of the per-case BLEU statistics.
BLEU_STAT_COLUMNS = (
    ["bleu_hyp_len", "bleu_ref_len"]
    + [f"bleu_guess_{k}" for k in range(1, BLEU_N + 1)]
    + [f"bleu_correct_{k}" for k in range(1, BLEU_N + 1)]
)
# pycocoevalcap's constants: `small` keeps 0/0 finite, `tiny` keeps log(0) away.
_SMALL, _TINY = 1e-9, 1e-15


def bleu_case_stats(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """(n, 10) per-case statistics in BLEU_STAT_COLUMNS order, cooked by pycocoevalcap itself
    (single reference per case, so its 'closest' reference length is that reference's length)."""
    rows = []
    for hyp, ref in zip(hypotheses, references):
        cooked = cook_test(hyp, cook_refs([ref], n=BLEU_N), eff="closest", n=BLEU_N)
        rows.append([cooked["testlen"], cooked["reflen"], *cooked["guess"], *cooked["correct"]])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(BLEU_STAT_COLUMNS))


def corpus_bleu(summed: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from summed statistics: (..., 10) → (..., 4). Same arithmetic as pycocoevalcap's
    BleuScorer.compute_score: cumulative product of clipped precisions, k-th root, brevity penalty."""
    summed = np.asarray(summed, dtype=np.float64)
    hyp_len, ref_len = summed[..., 0], summed[..., 1]
    guess, correct = summed[..., 2 : 2 + BLEU_N], summed[..., 2 + BLEU_N : 2 + 2 * BLEU_N]
    log_p = np.log(correct + _TINY) - np.log(guess + _SMALL)
    orders = np.arange(1, BLEU_N + 1)
    bleu = np.exp(np.cumsum(log_p, axis=-1) / orders)
    ratio = (hyp_len + _TINY) / (ref_len + _SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, 1e-300)), 1.0)
    return bleu * penalty[..., None]


def rouge_l_scores(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Per-case ROUGE-L (pycocoevalcap's Rouge, LCS F-measure with beta 1.2); corpus = mean."""
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    return np.array([scorer.calc_score([h], [r]) for h, r in zip(hypotheses, references)], dtype=np.float64)


def rouge_n_scores(hypotheses: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """Per-case ROUGE-1 and ROUGE-2 F-measure (rouge-score, no stemming); corpus = mean."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2"], use_stemmer=False)
    out = {"rouge_1": [], "rouge_2": []}
    for h, r in zip(hypotheses, references):
        s = scorer.score(r, h)  # rouge-score's order is (target, prediction)
        out["rouge_1"].append(s["rouge1"].fmeasure)
        out["rouge_2"].append(s["rouge2"].fmeasure)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def cider_scores(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Per-case CIDEr-D (pycocoevalcap; document frequencies from this set's references); corpus = mean."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [r] for i, r in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    _, scores = Cider().compute_score(gts, res)
    return np.asarray(scores, dtype=np.float64)
