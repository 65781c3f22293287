"""Case-level bootstrap: 95% percentile intervals for every metric and paired comparisons.

Every metric is written as `fn(S)` of column sums S of a per-case table X (n cases × k columns):
a mean is sum(x)/sum(1), corpus BLEU is a function of summed n-gram counts, F1 of summed
TP/FP/FN, METEOR the jar's aggregate of summed statistics. A resample is a vector w of case
counts (multinomial, from numpy's default_rng(seed)), so its statistic is fn(w @ X): corpus
statistics are recomputed exactly on each resample without re-tokenising anything, and 5000
resamples of 500 cases take a fraction of a second. Intervals are percentile intervals (BCa would
need a jackknife of the METEOR jar per case for little gain at these n).

Paired comparison: the same w for both evaluations (cases aligned by VolumeName); the difference
B − A per resample gives the interval and a two-sided p-value
p = min(1, 2·min(#{d* ≤ 0} + 1, #{d* ≥ 0} + 1) / (R + 1)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 5000
LEVEL = 0.95
_CHUNK = 250  # resamples per matrix product; bounds memory at n × 250 counts


@dataclass(frozen=True)
class Statistic:
    """A metric as a function of summed per-case columns: fn((b, len(columns))) → (b,)."""

    key: str
    label: str
    group: str
    implementation: str
    columns: tuple[str, ...]
    fn: Callable[[np.ndarray], np.ndarray]


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """(b, n) arrays of how often each case is drawn, in chunks; deterministic for (n, resamples, seed)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        b = min(_CHUNK, resamples - done)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _evaluate(stats: list[Statistic], sums: np.ndarray, index: dict[str, int]) -> np.ndarray:
    """(b, len(stats)) statistic values from (b, K) column sums."""
    out = np.empty((sums.shape[0], len(stats)))
    for j, s in enumerate(stats):
        out[:, j] = s.fn(sums[:, [index[c] for c in s.columns]])
    return out


def _matrix(table, stats: list[Statistic]) -> tuple[np.ndarray, dict[str, int]]:
    columns = sorted({c for s in stats for c in s.columns})
    return np.column_stack([np.asarray(table[c], dtype=np.float64) for c in columns]), {c: i for i, c in enumerate(columns)}


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Estimate:
    key: str
    value: float
    ci_low: float
    ci_high: float


def bootstrap(table, stats: list[Statistic], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              progress: bool = False) -> dict[str, Estimate]:
    """Point value (all cases once) and 95% percentile interval for each statistic."""
    x, index = _matrix(table, stats)
    point = _evaluate(stats, x.sum(axis=0, keepdims=True), index)[0]
    samples = _resampled(x, None, stats, index, resamples, seed, progress)
    return {s.key: Estimate(s.key, float(point[j]), *percentile_interval(samples[:, j])) for j, s in enumerate(stats)}


@dataclass(frozen=True)
class PairedEstimate:
    key: str
    value_a: float
    value_b: float
    difference: float  # B − A
    ci_low: float
    ci_high: float
    p_value: float


def paired_bootstrap(table_a, table_b, stats: list[Statistic], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     progress: bool = False) -> dict[str, PairedEstimate]:
    """B − A for each statistic on the same resamples of aligned cases (row i of A and B is one case)."""
    xa, index = _matrix(table_a, stats)
    xb, _ = _matrix(table_b, stats)
    if xa.shape != xb.shape:
        raise ValueError("paired tables must have the same cases")
    pa = _evaluate(stats, xa.sum(axis=0, keepdims=True), index)[0]
    pb = _evaluate(stats, xb.sum(axis=0, keepdims=True), index)[0]
    diffs = _resampled(xa, xb, stats, index, resamples, seed, progress)
    out = {}
    for j, s in enumerate(stats):
        d = diffs[:, j][np.isfinite(diffs[:, j])]
        r = d.size
        p = min(1.0, 2 * min(np.sum(d <= 0) + 1, np.sum(d >= 0) + 1) / (r + 1)) if r else float("nan")
        out[s.key] = PairedEstimate(s.key, float(pa[j]), float(pb[j]), float(pb[j] - pa[j]),
                                    *percentile_interval(d), float(p))
    return out


def resampled(fn: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
              progress: bool = False) -> np.ndarray:
    """(resamples, k): `fn` of each chunk of case counts ((b, n) → (b, k)) from resample_counts, stacked.
    The one resampling loop of the project: report metrics, classifier AUROC and reader-study means."""
    from tqdm.auto import tqdm

    chunks = []
    bar = tqdm(total=resamples, desc="bootstrap", unit="resample", disable=not progress, leave=False)
    for w in resample_counts(n, resamples, seed):
        chunks.append(fn(w))
        bar.update(len(w))
    bar.close()
    return np.concatenate(chunks) if chunks else np.empty((0, 0))


def _resampled(xa, xb, stats, index, resamples, seed, progress) -> np.ndarray:
    """(resamples, len(stats)) statistic values, or B − A differences when xb is given."""

    def values(w: np.ndarray) -> np.ndarray:
        a = _evaluate(stats, w @ xa, index)
        return a if xb is None else _evaluate(stats, w @ xb, index) - a

    out = resampled(values, xa.shape[0], resamples, seed, progress)
    return out if len(out) else np.empty((0, len(stats)))


def mean_statistic(key: str, label: str, group: str, implementation: str, column: str,
                   count_column: str = "_one") -> Statistic:
    """Mean of a per-case score over the cases that count (count_column is 1 for them, else 0;
    the score column must then be 0 where the case does not count)."""
    return Statistic(key, label, group, implementation, (column, count_column),
                     lambda s: np.divide(s[:, 0], s[:, 1], out=np.full(len(s), np.nan), where=s[:, 1] > 0))
