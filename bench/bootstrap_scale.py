"""The classifier AUROC bootstrap at CT-RATE scale (3,039 validation cases × 18 findings × 5,000
resamples): study.metrics.auroc.classifier_auroc (matrix products through study.bootstrap.resampled)
against the einsum version it replaced (kept below, only here, as the reference), same data, same seed,
in one run. The per-resample AUROCs must be bit-identical or the script exits 1.

    python3 bench/bootstrap_scale.py                       # full scale, reference at full scale too
    python3 bench/bootstrap_scale.py --reference-resamples 500   # reference timed on the first 500 resamples only
Synthetic data: prevalences 5-45 %, probabilities rounded to 3 decimals (ties, as real outputs have).
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import environment


def einsum_auroc_samples(probabilities, labels, resamples: int, seed: int):
    """The pre-issue-#16 loop: per chunk of counts, per finding, np.einsum('bi,ij,bj->b') without optimize."""
    import numpy as np

    from study.bootstrap import resample_counts
    from study.metrics.auroc import _comparisons

    n, k = labels.shape
    comparisons = [_comparisons(probabilities[:, j], labels[:, j].astype(bool)) for j in range(k)]
    chunks = []
    for w in resample_counts(n, resamples, seed):
        row = []
        for j in range(k):
            pos = labels[:, j].astype(bool)
            wp, wn = w[:, pos], w[:, ~pos]
            num = np.einsum("bi,ij,bj->b", wp, comparisons[j], wn)
            den = wp.sum(axis=1) * wn.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                row.append(np.where(den > 0, num / np.maximum(den, 1e-300), np.nan))
        chunks.append(np.stack(row, axis=1))
    return np.concatenate(chunks)


def synthetic(cases: int, findings: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.05, 0.45, findings)
    labels = (rng.random((cases, findings)) < prevalence).astype(np.int64)
    probabilities = np.clip(0.35 + 0.3 * labels + 0.2 * rng.normal(size=labels.shape), 0, 1).round(3)
    return probabilities, labels


def main(argv=None) -> int:
    import numpy as np
    import torch

    from study.bootstrap import resampled
    from study.metrics.auroc import _comparisons, classifier_auroc, weighted_auroc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3039)
    ap.add_argument("--findings", type=int, default=18)
    ap.add_argument("--resamples", type=int, default=5000)
    ap.add_argument("--reference-resamples", type=int, help="time the einsum reference on this many resamples "
                    "(the first ones of the same seed) and scale its time linearly; default: all")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    probabilities, labels = synthetic(args.cases, args.findings)
    names = [f"finding {j}" for j in range(args.findings)]
    ref_n = min(args.reference_resamples or args.resamples, args.resamples)
    print(environment(torch.device("cpu")) + f", numpy {np.__version__}")
    print(f"{args.cases} cases x {args.findings} findings x {args.resamples} resamples, seed {args.seed}")

    start = time.perf_counter()
    classifier_auroc(probabilities, labels, names, resamples=args.resamples, seed=args.seed)
    new_s = time.perf_counter() - start

    start = time.perf_counter()
    old = einsum_auroc_samples(probabilities, labels, ref_n, args.seed)
    old_s = (time.perf_counter() - start) * args.resamples / ref_n

    # The same resamples through the new per-resample function, to compare value for value.
    comparisons = [_comparisons(probabilities[:, j], labels[:, j].astype(bool)) for j in range(args.findings)]

    def aurocs(w):
        return np.stack([weighted_auroc(probabilities[:, j], labels[:, j], w, comparisons[j])
                         for j in range(args.findings)], axis=1)

    new = resampled(aurocs, args.cases, ref_n, args.seed)
    equal = np.array_equal(old, new, equal_nan=True)
    scaled = "" if ref_n == args.resamples else f" (timed on {ref_n} resamples, scaled x{args.resamples / ref_n:g})"
    print(f"classifier_auroc, matmul (study.bootstrap.resampled): {new_s:8.1f} s")
    print(f"einsum reference (the replaced loop){scaled}: {old_s:8.1f} s")
    print(f"ratio einsum / matmul: {old_s / new_s:.1f}x; per-resample AUROCs bit-identical on {ref_n} resamples: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
