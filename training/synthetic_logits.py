"""Classifier logits of a chosen quality, made from the dataset's labels (the phantom truth), for the
logit-quality curve (training/logit_curve.py): V-3 trained and evaluated on them instead of the cached
classifier's logits, through one explicit seam (`train_connector(..., logits=)`, `evaluate_run(..., logits=)`);
the check that cached logits are the classifier's output is still made on the cache first.

Model, per case and finding: logit = a·(2y − 1) + ε, ε ~ N(0, 1). Positives are N(a, 1), negatives N(−a, 1), so
a finding's AUROC = P(X₊ > X₋) = Φ((a − (−a)) / √(1² + 1²)) = Φ(a·√2), whatever its prevalence, and
a = Φ⁻¹(AUROC) / √2. Every finding gets the same a, so the macro AUROC is the target as well.
A case's noise is drawn from (seed, VolumeName): the same in training and evaluation, whatever order the cases
are read in, and shared by every level, so the levels differ only in a (common random numbers: the curve's
points are paired). AUROC 1 needs a = ∞; it is capped at Φ⁻¹(1 − 1e-9)/√2 ≈ 4.24, where a pair is misordered
with probability 1e-9.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from engine.errors import ConfigError, DatasetError

AUROC_CAP = 1.0 - 1e-9  # AUROC 1.0 is asked as this: a finite scale, no misordered pair in practice
MODEL = "a*(2y-1) + N(0,1) per case and finding; a = inv_Phi(AUROC)/sqrt(2)"


def scale_for_auroc(auroc: float) -> float:
    """The a whose logits a·(2y − 1) + N(0, 1) have this AUROC (0.5 ≤ auroc ≤ 1)."""
    if not 0.5 <= auroc <= 1.0:
        raise ConfigError(f"a target AUROC must lie between 0.5 and 1, got {auroc}")
    return NormalDist().inv_cdf(min(auroc, AUROC_CAP)) / math.sqrt(2.0)


def expected_auroc(scale: float) -> float:
    """The AUROC of logits a·(2y − 1) + N(0, 1): Φ(a·√2) (the inverse of scale_for_auroc)."""
    return NormalDist().cdf(scale * math.sqrt(2.0))


def case_noise(volume_name: str, n_labels: int, seed: int) -> np.ndarray:
    """ε of one case: standard normal, fixed by (seed, VolumeName)."""
    key = int.from_bytes(hashlib.sha256(volume_name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key]).standard_normal(n_labels)


@dataclass(frozen=True)
class SyntheticLogits:
    target_auroc: float
    seed: int = 0

    def __post_init__(self):
        scale_for_auroc(self.target_auroc)  # refuses a target outside [0.5, 1]

    @property
    def scale(self) -> float:
        return scale_for_auroc(self.target_auroc)

    def logits(self, volume_names: list[str], labels: np.ndarray) -> np.ndarray:
        """(N, n_labels) float32 logits of these cases, labels (N, n_labels) 0/1."""
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim != 2 or labels.shape[0] != len(volume_names):
            raise ValueError(f"labels {labels.shape} do not match {len(volume_names)} cases")
        noise = np.stack([case_noise(n, labels.shape[1], self.seed) for n in volume_names]) if volume_names else \
            np.zeros_like(labels)
        return (self.scale * (2.0 * labels - 1.0) + noise).astype(np.float32)

    def describe(self) -> dict:
        """What made the logits: in the run's identity and notes and in the evaluation's metrics.json."""
        return {"kind": "synthetic", "target_auroc": self.target_auroc, "scale": self.scale, "noise_sd": 1.0,
                "seed": self.seed, "model": MODEL}

    def applied(self, split, dataset):
        """`split` (a training.data.ReportSplit with logits) with its logits replaced by these, from the
        dataset's labels of its cases. DatasetError naming a case without labels."""
        import torch

        if split.logits is None:
            raise ConfigError(f"split {split.name!r} was loaded without logits: synthetic logits are for V-3")
        lacking = [n for n in split.volume_names if dataset.case(n).labels is None]
        if lacking:
            raise DatasetError(f"synthetic logits need labels; {len(lacking)} {split.name} case(s) have none "
                               f"(first: {lacking[0]})", dataset.root)
        labels = np.stack([dataset.case(n).labels for n in split.volume_names]) if len(split) else \
            np.zeros(tuple(split.logits.shape))
        if labels.shape != tuple(split.logits.shape):
            raise ConfigError(f"labels {labels.shape} and cached logits {tuple(split.logits.shape)} of split "
                              f"{split.name!r} differ in shape")
        return dataclasses.replace(split, logits=torch.from_numpy(self.logits(split.volume_names, labels)))
