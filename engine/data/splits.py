"""Patients and splits: CT-RATE names encode the patient, and no patient may sit on two sides."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

SPLITS = ("train", "valid", "test")

# The volume files a dataset folder may hold, longest suffix first: the one place to add a format.
VOLUME_SUFFIXES = (".nii.gz", ".nii")

# CT-RATE: <split>_<patient>_<scan letter>_<reconstruction>.nii.gz, e.g. train_12_a_2.nii.gz.
_CTRATE_NAME = re.compile(r"^(?P<split>[A-Za-z]+)_(?P<patient>\d+)_(?P<scan>[A-Za-z]+)_(?P<rec>\d+)$")


def is_volume_file(name: str) -> bool:
    return name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(volume_name: str) -> str:
    """The name without folder and volume suffix (also ".zip", a zipped DICOM series)."""
    name = volume_name.rsplit("/", 1)[-1]
    for suffix in (*VOLUME_SUFFIXES, ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def ctrate_name_parts(volume_name: str) -> dict[str, str] | None:
    """{"split", "patient", "scan", "rec"} of a CT-RATE name (valid_53_a_1.nii.gz), None for other names."""
    m = _CTRATE_NAME.match(volume_stem(volume_name))
    return m.groupdict() if m else None


def patient_id(volume_name: str) -> str:
    """The patient a volume belongs to: "train_12" for train_12_a_2.nii.gz.

    Names that do not follow CT-RATE's scheme count as their own patient (the name without suffix).
    """
    parts = ctrate_name_parts(volume_name)
    if parts:
        return f"{parts['split']}_{parts['patient']}"
    return volume_stem(volume_name)


def split_by_patient(
    names: list[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Assign each volume to train/valid/test so that all volumes of a patient share a split.

    Deterministic for a given set of names, fractions and seed (the input order does not matter).
    Patients are shuffled, then split by the fractions of the patient count (largest remainder),
    giving each split with a non-zero fraction at least one patient when there are enough.
    """
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions {fractions} must be three non-negative numbers (train, valid, test)")
    by_patient: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_patient[patient_id(name)].append(name)
    patients = sorted(by_patient)
    order = np.random.default_rng(seed).permutation(len(patients))
    patients = [patients[i] for i in order]

    total = sum(fractions)
    quotas = [len(patients) * f / total for f in fractions]
    counts = [int(q) for q in quotas]
    for i in sorted(range(3), key=lambda i: quotas[i] - counts[i], reverse=True)[: len(patients) - sum(counts)]:
        counts[i] += 1
    for i in range(3):  # a non-empty split for every non-zero fraction, taken from the largest
        if fractions[i] > 0 and counts[i] == 0 and max(counts) > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1

    assignment: dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, counts):
        for p in patients[start:start + count]:
            for name in by_patient[p]:
                assignment[name] = split
        start += count
    return assignment


def leaking_patients(splits: dict[str, str]) -> dict[str, set[str]]:
    """Patients whose volumes sit in more than one split: {patient: {splits}}."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, split in splits.items():
        seen[patient_id(name)].add(split)
    return {p: s for p, s in seen.items() if len(s) > 1}


def carve_by_patient(names: list[str], fraction: float, seed: int = 0) -> set[str]:
    """The names of about `fraction` of the patients (at least one when there are two or more and
    the fraction is positive), all volumes of a patient together.

    Patients are ranked by a seeded hash of their id, not by a permutation of the ones present, so
    the ranking does not depend on which other patients a (partial) download holds."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction {fraction} must be in [0, 1)")
    by_patient: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_patient[patient_id(name)].append(name)
    ranked = sorted(by_patient, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    count = int(round(fraction * len(ranked)))
    if fraction > 0 and count == 0 and len(ranked) > 1:
        count = 1
    return {name for p in ranked[:count] for name in by_patient[p]}
