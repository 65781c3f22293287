"""The abnormality classifier's AUROC per finding and macro, with the same case bootstrap as the
report metrics (study.bootstrap.resampled: the same seeded case counts, the same loop).

AUROC is not a function of column sums, so it does not fit study.bootstrap's framework; but it is
the Mann-Whitney statistic, and with case weights w (how often each case is drawn) it stays a
bilinear form: AUROC(w) = w_pos · C · w_neg / (Σw_pos · Σw_neg), C[i, j] = 1 if positive i scores
above negative j, ½ on a tie. So a chunk of resamples is one matrix product (w_pos @ C) and a
row-wise dot with w_neg, no re-sorting. (An einsum of the three without `optimize` was 19× slower:
bench/bootstrap_scale.py.) Counts and C are multiples of ½ far below 2**53, so every sum is exact in
float64 whatever the order: the values are bit-identical to the einsum's.
"""

from __future__ import annotations

import warnings

import numpy as np

from study.bootstrap import DEFAULT_RESAMPLES, percentile_interval, resampled

IMPLEMENTATION = "rad3d weighted Mann-Whitney (= sklearn.metrics.roc_auc_score)"


def _comparisons(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    sp, sn = scores[positive][:, None], scores[~positive][None, :]
    return (sp > sn).astype(np.float64) + 0.5 * (sp == sn)


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                   comparisons: np.ndarray | None = None) -> np.ndarray:
    """AUROC of one finding for each row of `weights` (b, n); NaN where a resample lacks a class.
    `comparisons`: this finding's C, computed once when many weight chunks follow."""
    positive = labels.astype(bool)
    c = _comparisons(scores, positive) if comparisons is None else comparisons
    wp, wn = weights[:, positive], weights[:, ~positive]
    num = ((wp @ c) * wn).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def classifier_auroc(probabilities: np.ndarray, labels: np.ndarray, names: list[str], *,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> list[dict]:
    """Per-finding AUROC (findings with both classes present) and their macro mean, each with a 95%
    percentile interval over case resamples. Returns dicts with key, label, value, ci_low, ci_high."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels)
    if probabilities.shape != labels.shape or probabilities.ndim != 2 or probabilities.shape[1] != len(names):
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be "
                         f"(cases, {len(names)})")
    n = len(labels)
    usable = [j for j in range(len(names)) if 0 < labels[:, j].sum() < n]
    comparisons = {j: _comparisons(probabilities[:, j], labels[:, j].astype(bool)) for j in usable}

    def auroc(j: int, weights: np.ndarray) -> np.ndarray:
        return weighted_auroc(probabilities[:, j], labels[:, j], weights, comparisons[j])

    point = {j: float(auroc(j, np.ones((1, n)))[0]) for j in usable}
    table = resampled(lambda w: np.stack([auroc(j, w) for j in usable], axis=1), n, resamples, seed) if usable else None
    per = {j: table[:, i] for i, j in enumerate(usable)}
    out = []
    for j in usable:
        low, high = percentile_interval(per[j][np.isfinite(per[j])])
        out.append({"key": f"auroc:{names[j]}", "label": f"AUROC {names[j]}", "value": point[j],
                    "ci_low": low, "ci_high": high})
    if usable:
        with warnings.catch_warnings():  # a resample may draw no positive of every finding: NaN, dropped below
            warnings.simplefilter("ignore", RuntimeWarning)
            macro = np.nanmean(np.stack([per[j] for j in usable]), axis=0)
        low, high = percentile_interval(macro[np.isfinite(macro)])
        out.insert(0, {"key": "auroc_macro", "label": f"Classifier macro AUROC ({len(usable)} findings)",
                       "value": float(np.mean([point[j] for j in usable])), "ci_low": low, "ci_high": high})
    return out
