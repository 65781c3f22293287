"""Datasets: CT-RATE's folder format (volumes + reports/labels/metadata/splits CSVs) and patient splits."""

from engine.data.ctrate import Case, CTRateDataset, check_volumes, parse_xy_spacing
from engine.data.splits import SPLITS, leaking_patients, patient_id, split_by_patient

__all__ = [
    "Case",
    "CTRateDataset",
    "check_volumes",
    "parse_xy_spacing",
    "SPLITS",
    "leaking_patients",
    "patient_id",
    "split_by_patient",
]
