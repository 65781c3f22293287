"""Datasets: CT-RATE's format in rad3d's flat layout or CT-RATE's released tree, resolved from a
DataSource (`--data ROOT` plus overrides), with patient splits."""

from engine.data.ctrate import Case, CTRateDataset, check_volumes, parse_xy_spacing, resolve
from engine.data.source import DataSource, add_data_arguments, source_from_args
from engine.data.splits import (
    SPLITS,
    VOLUME_SUFFIXES,
    carve_by_patient,
    leaking_patients,
    patient_id,
    split_by_patient,
)

__all__ = [
    "Case",
    "CTRateDataset",
    "DataSource",
    "resolve",
    "add_data_arguments",
    "source_from_args",
    "check_volumes",
    "parse_xy_spacing",
    "SPLITS",
    "VOLUME_SUFFIXES",
    "carve_by_patient",
    "leaking_patients",
    "patient_id",
    "split_by_patient",
]
