"""Case bootstrap intervals and paired comparisons."""

import numpy as np
import pandas as pd
import pytest

from study.bootstrap import bootstrap, mean_statistic, paired_bootstrap, resample_counts

MEAN = [mean_statistic("score", "score", "test", "mean", "score")]


def _table(values):
    return pd.DataFrame({"score": values, "_one": np.ones(len(values))})


def test_resample_counts_are_seeded_multinomial():
    a = np.concatenate(list(resample_counts(30, 600, seed=3)))
    b = np.concatenate(list(resample_counts(30, 600, seed=3)))
    assert a.shape == (600, 30) and np.array_equal(a, b)
    assert (a.sum(axis=1) == 30).all()
    assert not np.array_equal(a, np.concatenate(list(resample_counts(30, 600, seed=4))))
    assert a.mean() == pytest.approx(1.0, abs=0.02)


def test_interval_shrinks_with_more_cases():
    rng = np.random.default_rng(0)
    small = bootstrap(_table(rng.beta(2, 5, 50)), MEAN, resamples=2000, seed=1)["score"]
    large = bootstrap(_table(rng.beta(2, 5, 800)), MEAN, resamples=2000, seed=1)["score"]
    width_small, width_large = small.ci_high - small.ci_low, large.ci_high - large.ci_low
    # Width scales like 1/sqrt(n): sqrt(800/50) = 4.
    assert 2.5 < width_small / width_large < 6
    assert small.ci_low < small.value < small.ci_high
    # sd of Beta(2,5) is 0.16; a 95% interval of the mean spans about 3.92·sd/sqrt(n).
    assert width_large == pytest.approx(3.92 * 0.16 / np.sqrt(800), rel=0.2)


def test_paired_comparison_with_itself_is_null():
    t = _table(np.random.default_rng(1).random(200))
    est = paired_bootstrap(t, t, MEAN, resamples=1000, seed=0)["score"]
    assert est.difference == 0 and est.ci_low == 0 and est.ci_high == 0
    assert est.p_value == pytest.approx(1.0)


def test_paired_comparison_detects_clearly_better_run():
    rng = np.random.default_rng(2)
    a = rng.random(200)
    b = np.clip(a + rng.normal(0.05, 0.05, 200), 0, 1)
    est = paired_bootstrap(_table(a), _table(b), MEAN, resamples=2000, seed=0)["score"]
    assert est.p_value < 0.01
    assert 0 < est.ci_low < est.difference < est.ci_high
    # A shift much smaller than the noise is not significant.
    c = a + rng.normal(0.0, 0.2, 200)
    assert paired_bootstrap(_table(a), _table(c), MEAN, resamples=2000, seed=0)["score"].p_value > 0.01


def test_classifier_auroc_equals_sklearn_and_its_interval_shrinks_with_more_cases():
    from sklearn.metrics import roc_auc_score

    from study.metrics.auroc import classifier_auroc, weighted_auroc

    rng = np.random.default_rng(0)
    names = ["a", "b", "never"]

    def draw(n):
        labels = (rng.random((n, 3)) < [0.3, 0.5, 0.0]).astype(int)
        probs = np.clip(0.5 + 0.25 * (labels - 0.5) + 0.2 * rng.normal(size=(n, 3)), 0, 1).round(2)  # ties too
        return probs, labels

    probs, labels = draw(120)
    got = {m["key"]: m for m in classifier_auroc(probs, labels, names, resamples=400, seed=1)}
    assert set(got) == {"auroc_macro", "auroc:a", "auroc:b"}  # a finding without positives is left out
    for j, name in enumerate(names[:2]):
        assert got[f"auroc:{name}"]["value"] == pytest.approx(roc_auc_score(labels[:, j], probs[:, j]), abs=1e-12)
        assert got[f"auroc:{name}"]["ci_low"] < got[f"auroc:{name}"]["value"] < got[f"auroc:{name}"]["ci_high"]
    # Case weights act like repeated cases.
    w = rng.integers(0, 4, size=120).astype(float)
    rep = np.repeat(np.arange(120), w.astype(int))
    assert weighted_auroc(probs[:, 1], labels[:, 1], w[None])[0] == pytest.approx(
        roc_auc_score(labels[rep, 1], probs[rep, 1]), abs=1e-12)
    big_p, big_l = draw(1200)
    big = {m["key"]: m for m in classifier_auroc(big_p, big_l, names, resamples=400, seed=1)}
    width = lambda m: m["ci_high"] - m["ci_low"]  # noqa: E731
    assert width(big["auroc_macro"]) < 0.6 * width(got["auroc_macro"])


def test_each_auroc_resample_equals_sklearn_on_the_drawn_cases():
    """The vectorised bootstrap (one matrix product per chunk, through study.bootstrap.resampled) gives,
    resample for resample, sklearn's AUROC of the cases each resample drew, repeats included."""
    from sklearn.metrics import roc_auc_score

    from study.bootstrap import resample_counts, resampled
    from study.metrics.auroc import weighted_auroc

    rng = np.random.default_rng(4)
    labels = (rng.random((150, 2)) < [0.2, 0.5]).astype(int)
    probs = np.clip(0.5 + 0.3 * (labels - 0.5) + 0.25 * rng.normal(size=labels.shape), 0, 1).round(2)  # ties too
    got = resampled(lambda w: np.stack([weighted_auroc(probs[:, j], labels[:, j], w) for j in range(2)], axis=1),
                    150, resamples=6, seed=9)
    counts = np.concatenate(list(resample_counts(150, 6, seed=9)))
    for r in range(6):
        drawn = np.repeat(np.arange(150), counts[r].astype(int))
        for j in range(2):
            assert got[r, j] == pytest.approx(roc_auc_score(labels[drawn, j], probs[drawn, j]), abs=1e-12)


def test_reader_study_intervals_are_the_bootstrap_of_the_drawn_cases():
    """The reader study uses study.bootstrap's case counts: the same draws as indexing the cases with
    default_rng(seed).integers(0, n, (resamples, n)), so its intervals are those of the plain
    resampled means (equal up to summation order)."""
    from study.readers.stats import _bootstrap_mean

    rng = np.random.default_rng(5)
    for n in (5, 17, 60):
        scores = rng.integers(1, 6, size=n).astype(float)
        idx = np.random.default_rng(0).integers(0, n, size=(2000, n))
        expected = np.percentile(scores[idx].mean(axis=1), [2.5, 97.5])
        assert _bootstrap_mean(scores, 2000, 0) == pytest.approx(tuple(expected), abs=1e-12)
    assert all(np.isnan(_bootstrap_mean(np.array([3.0]), 100, 0)))
