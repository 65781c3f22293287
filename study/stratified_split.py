"""Multi-label stratified train/valid/test splits with no patient on two sides.

Why iterative-stratification (iterstrat's MultilabelStratifiedShuffleSplit): a derived label set has
many labels per volume, some rare. scikit-learn's StratifiedKFold / StratifiedShuffleSplit stratify one
label (or every label combination as one class, which with 18+ labels leaves most classes with one
member); random splits leave rare labels out of a small split. Iterative stratification (Sechidis,
Tsoumakas & Vlahavas 2011, "On the stratification of multi-label data") deals the rarest label's
examples first, each to the split that most lacks it, so every label keeps close to its prevalence in
every split; iterstrat is its maintained scikit-learn-compatible implementation (BSD-3).

Grouping: the unit dealt is the patient, not the volume. Each patient's labels are the OR over their
volumes; the patients are stratified, then every volume follows its patient, so no patient sits on two
sides. Two successive shuffle splits give three parts: test from all patients, then valid from the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from engine.data import SPLITS, patient_id
from engine.errors import ConfigError

RETRIES = 20  # other seeds tried (seed+1, ...) when a small split misses a rare label


@dataclass
class Split:
    splits: dict[str, str]  # VolumeName -> train / valid / test
    seed: int  # the seed that gave it (the one asked, or a retry after it)
    label_names: tuple[str, ...]

    def prevalence(self, volume_names: list[str], matrix: np.ndarray) -> dict[str, dict[str, tuple[int, float]]]:
        """{split: {label: (positive volumes, fraction of the split's volumes)}}."""
        out = {}
        for split in SPLITS:
            rows = [i for i, n in enumerate(volume_names) if self.splits[n] == split]
            pos = matrix[rows].sum(axis=0) if rows else np.zeros(len(self.label_names))
            out[split] = {name: (int(p), float(p) / len(rows) if rows else 0.0)
                          for name, p in zip(self.label_names, pos)}
        return out


def check_fractions(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3:
        raise ConfigError(f"--fractions takes three numbers (train valid test), got {len(fractions)}")
    if any(not 0 < f < 1 for f in fractions):
        raise ConfigError(f"--fractions must each lie strictly between 0 and 1, got {' '.join(map(str, fractions))}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"--fractions must sum to 1, got {' '.join(map(str, fractions))} (sum {sum(fractions):g})")
    return fractions


def patient_labels(volume_names: list[str], matrix: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Patients (sorted) and their labels, OR-ed over their volumes."""
    ids = [patient_id(n) for n in volume_names]
    patients = sorted(set(ids))
    row = {p: i for i, p in enumerate(patients)}
    out = np.zeros((len(patients), matrix.shape[1]), dtype=np.int8)
    for pid, labels in zip(ids, matrix):
        out[row[pid]] |= labels.astype(np.int8)
    return patients, out


def _deal(y: np.ndarray, fractions, seed: int) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) per patient."""
    train, valid, test = fractions
    part = np.zeros(len(y), dtype=np.int8)
    first = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test, random_state=seed)
    rest, test_idx = next(first.split(np.zeros(len(y)), y))
    part[test_idx] = 2
    second = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=valid / (train + valid), random_state=seed)
    _, valid_idx = next(second.split(np.zeros(len(rest)), y[rest]))
    part[rest[valid_idx]] = 1
    return part


def stratified_split(volume_names: list[str], matrix: np.ndarray, label_names, fractions=(0.7, 0.15, 0.15),
                     seed: int = 0) -> Split:
    """train/valid/test per volume, stratified over the labels by patient (see the module docstring);
    every label has a positive patient in every split, or one ConfigError naming the labels that cannot."""
    fractions = check_fractions(fractions)
    label_names = tuple(label_names)
    patients, y = patient_labels(volume_names, np.asarray(matrix))
    counts = y.sum(axis=0)
    few = [f"{n!r} ({int(c)})" for n, c in zip(label_names, counts) if c < len(SPLITS)]
    if few:
        raise ConfigError(f"too few positive patients to put in all {len(SPLITS)} splits: {', '.join(few)} "
                          "(raise --min-count or drop those labels)")
    missing: list[str] = []
    for attempt in range(seed, seed + RETRIES + 1):
        part = _deal(y, fractions, attempt)
        missing = [f"{n!r} (in {sum(part[y[:, j] == 1] == k for k in range(3)).tolist()} patients per split)"
                   for j, n in enumerate(label_names) if len(set(part[y[:, j] == 1].tolist())) < len(SPLITS)]
        if not missing:
            by_patient = {p: SPLITS[k] for p, k in zip(patients, part)}
            return Split({n: by_patient[patient_id(n)] for n in volume_names}, attempt, label_names)
    raise ConfigError(f"no split with seeds {seed}..{seed + RETRIES} puts every label in every split; "
                      f"short: {', '.join(missing)} (too few positive patients for the fractions)")
