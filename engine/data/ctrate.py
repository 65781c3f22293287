"""A dataset folder in CT-RATE's format: volumes, reports, labels, optional metadata and splits.

    DIR/volumes/<any nesting>/<VolumeName>   e.g. volumes/train_1/train_1_a/train_1_a_1.nii.gz
    DIR/reports.csv    VolumeName, Findings_EN, Impressions_EN (ClinicalInformation_EN, Technique_EN)
    DIR/labels.csv     VolumeName + one 0/1 column per finding of the label set
    DIR/metadata.csv   optional: VolumeName, RescaleSlope, RescaleIntercept, XYSpacing, ZSpacing
    DIR/splits.csv     optional: VolumeName, split (train/valid/test); else split by patient

Opening checks everything at once and raises one DatasetError listing every problem found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from engine.data.splits import SPLITS, leaking_patients, patient_id, split_by_patient
from engine.errors import DatasetError
from engine.labels import LabelSet, ct_rate
from engine.volume import Volume

EMPTY_SECTION = "Not given."
REPORT_COLUMNS = ("VolumeName", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS = ("VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing")
SPLIT_COLUMNS = ("VolumeName", "split")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
_LISTED = 5  # names shown per problem before "and N more"


@dataclass(eq=False)
class Case:
    volume_name: str
    volume_path: Path
    patient_id: str
    findings: str
    impression: str
    labels: np.ndarray | None  # float32 0/1 in label-set order, None without a labels CSV
    split: str
    rescale: tuple[float, float] | None = None  # (slope, intercept) from the metadata CSV
    spacing_mm: tuple[float, float, float] | None = None  # (x, y, z) from the metadata CSV

    @property
    def report(self) -> str:
        """Findings and impression as one text, empty sections left out."""
        parts = [t for t in (self.findings, self.impression) if t]
        return "\n\n".join(parts)


def _section(text) -> str:
    text = "" if text is None else str(text).strip()
    return "" if text in (EMPTY_SECTION, "nan") else text


def _names(names) -> str:
    names = list(names)
    shown = ", ".join(str(n) for n in names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def parse_xy_spacing(text) -> tuple[float, float]:
    """CT-RATE's XYSpacing string "[0.75, 0.75]" (or one number) → (x, y) in mm; ValueError if not."""
    parts = [p.strip() for p in str(text).strip().strip("[]()").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"XYSpacing {text!r} is not one or two numbers") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"XYSpacing {text!r} is not one or two positive numbers")
    return values[0], values[1]


def _find_csv(root: Path, explicit, default: str, pattern: str, required: bool, problems: list[str]) -> Path | None:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            problems.append(f"{path}: no such CSV file")
            return None
        return path
    if (root / default).is_file():
        return root / default
    candidates = sorted(root.glob(pattern))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        problems.append(f"{root}: several {pattern} files ({_names(c.name for c in candidates)}): pass the one to use")
    elif required:
        problems.append(f"{root}: no {default} (or {pattern})")
    return None


def _read_csv(path: Path, required: tuple[str, ...], problems: list[str]) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        problems.append(f"{path.name}: cannot read CSV ({err})")
        return None
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.append(f"{path.name}: missing columns {missing}")
        return None
    df["VolumeName"] = df["VolumeName"].str.strip()
    empty = int((df["VolumeName"] == "").sum())
    if empty:
        problems.append(f"{path.name}: {empty} rows with an empty VolumeName")
        df = df[df["VolumeName"] != ""]
    dupes = sorted(set(df.loc[df["VolumeName"].duplicated(), "VolumeName"]))
    if dupes:
        problems.append(f"{path.name}: duplicate VolumeName {_names(dupes)}")
        df = df.drop_duplicates("VolumeName")
    return df.set_index("VolumeName", drop=False)


def index_volume_files(volume_root: Path, problems: list[str]) -> dict[str, Path]:
    """VolumeName (file name) → path, for every NIfTI under `volume_root`, at any depth."""
    found: dict[str, Path] = {}
    clashes: set[str] = set()
    for dirpath, _dirs, files in os.walk(volume_root):
        for f in files:
            if f.lower().endswith(VOLUME_SUFFIXES):
                if f in found:
                    clashes.add(f)
                found.setdefault(f, Path(dirpath, f))
    if clashes:
        problems.append(f"{volume_root}: the same volume file name in several folders: {_names(sorted(clashes))}")
    return found


def _label_matrix(df: pd.DataFrame, path: Path, label_set: LabelSet, problems: list[str]) -> dict | None:
    """VolumeName → float32 label vector in label-set order; None when label columns are missing."""
    columns = [c for c in df.columns if c != "VolumeName"]
    missing = [n for n in label_set.names if n not in columns]
    extra = [c for c in columns if c not in label_set.names]
    if missing or extra:
        what = []
        if missing:
            what.append(f"lacks label columns {missing}")
        if extra:
            what.append(f"has columns not in label set {label_set.name!r}: {extra}")
        problems.append(f"{path.name}: " + "; ".join(what))
        if missing:
            return None
    values = df[list(label_set.names)].apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        raw = df[list(label_set.names)]
        cells = [f"{raw.index[r]} {raw.columns[c]}={raw.iat[r, c]!r}" for r, c in zip(*np.nonzero(bad.to_numpy()))]
        problems.append(f"{path.name}: label values not 0/1: {_names(cells)}")
    matrix = values.fillna(0).to_numpy(dtype=np.float32)
    return {name: matrix[i] for i, name in enumerate(df.index)}


def _metadata(df: pd.DataFrame, path: Path, problems: list[str]) -> dict:
    """VolumeName → ((slope, intercept), (x, y, z) spacing); unparseable rows become one problem."""
    out, bad = {}, []
    for name, row in df.iterrows():
        try:
            slope, intercept, z = float(row["RescaleSlope"]), float(row["RescaleIntercept"]), float(row["ZSpacing"])
            x, y = parse_xy_spacing(row["XYSpacing"])
            if not (np.isfinite([slope, intercept, z]).all() and slope != 0 and z > 0):
                raise ValueError("RescaleSlope must be non-zero and ZSpacing positive")
        except ValueError as err:
            bad.append(f"{name} ({err})")
            continue
        out[str(name)] = ((slope, intercept), (x, y, z))
    if bad:
        problems.append(f"{path.name}: unparseable rows: {_names(bad)}")
    return out


@dataclass
class CTRateDataset:
    root: Path
    cases: list[Case]
    label_set: LabelSet
    csv_paths: dict[str, Path | None] = field(default_factory=dict)
    split_source: str = "splits.csv"

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        reports_csv: str | Path | None = None,
        labels_csv: str | Path | None = None,
        metadata_csv: str | Path | None = None,
        splits_csv: str | Path | None = None,
        label_set: LabelSet | None = None,
        split_seed: int = 0,
    ) -> "CTRateDataset":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError("no such dataset folder", root)
        label_set = label_set or ct_rate()
        problems: list[str] = []
        paths = {
            "reports": _find_csv(root, reports_csv, "reports.csv", "*reports*.csv", True, problems),
            "labels": _find_csv(root, labels_csv, "labels.csv", "*labels*.csv", False, problems),
            "metadata": _find_csv(root, metadata_csv, "metadata.csv", "*metadata*.csv", False, problems),
            "splits": _find_csv(root, splits_csv, "splits.csv", "*splits*.csv", False, problems),
        }
        reports = _read_csv(paths["reports"], REPORT_COLUMNS, problems) if paths["reports"] else None
        labels_df = _read_csv(paths["labels"], ("VolumeName",), problems) if paths["labels"] else None
        meta_df = _read_csv(paths["metadata"], METADATA_COLUMNS, problems) if paths["metadata"] else None
        splits_df = _read_csv(paths["splits"], SPLIT_COLUMNS, problems) if paths["splits"] else None

        volume_root = root / "volumes" if (root / "volumes").is_dir() else root
        files = index_volume_files(volume_root, problems)
        names = list(reports.index) if reports is not None else []

        labels = _label_matrix(labels_df, paths["labels"], label_set, problems) if labels_df is not None else None
        if labels_df is not None:
            only_reports = [n for n in names if n not in labels_df.index]
            only_labels = [n for n in labels_df.index if reports is not None and n not in reports.index]
            if only_reports:
                problems.append(f"{len(only_reports)} volumes in {paths['reports'].name} have no row in "
                                f"{paths['labels'].name}: {_names(only_reports)}")
            if only_labels:
                problems.append(f"{len(only_labels)} volumes in {paths['labels'].name} have no row in "
                                f"{paths['reports'].name}: {_names(only_labels)}")

        missing_files = [n for n in names if n not in files]
        if missing_files:
            problems.append(f"{len(missing_files)} volumes listed in {paths['reports'].name} have no file under "
                            f"{volume_root}: {_names(missing_files)}")

        meta = _metadata(meta_df, paths["metadata"], problems) if meta_df is not None else {}
        if meta_df is not None:
            no_meta = [n for n in names if n not in meta_df.index]
            if no_meta:
                problems.append(f"{len(no_meta)} volumes have no row in {paths['metadata'].name}: {_names(no_meta)}")

        if splits_df is not None:
            splits = {n: s.strip().lower() for n, s in splits_df["split"].items()}
            unknown = sorted({s for s in splits.values() if s not in SPLITS})
            if unknown:
                problems.append(f"{paths['splits'].name}: unknown split names {unknown} (expected {list(SPLITS)})")
            no_split = [n for n in names if n not in splits]
            if no_split:
                problems.append(f"{len(no_split)} volumes have no row in {paths['splits'].name}: {_names(no_split)}")
            for patient, sides in sorted(leaking_patients({n: splits[n] for n in names if n in splits}).items()):
                problems.append(
                    f"{paths['splits'].name}: patient {patient} is in several splits ({', '.join(sorted(sides))})"
                )
            split_source = paths["splits"].name
        else:
            splits = split_by_patient(names, seed=split_seed)
            split_source = f"split by patient (seed {split_seed})"

        if problems:
            raise DatasetError(f"{len(problems)} problems", root, problems)

        cases = []
        for name in names:
            row = reports.loc[name]
            rescale, spacing = meta.get(name, (None, None))
            cases.append(Case(
                volume_name=name,
                volume_path=files[name],
                patient_id=patient_id(name),
                findings=_section(row["Findings_EN"]),
                impression=_section(row["Impressions_EN"]),
                labels=None if labels is None else labels[name],
                split=splits[name],
                rescale=rescale,
                spacing_mm=spacing,
            ))
        return cls(root=root, cases=cases, label_set=label_set, csv_paths=paths, split_source=split_source)

    def __post_init__(self):
        self._by_name = {c.volume_name: c for c in self.cases}

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def case(self, name: str) -> Case:
        try:
            return self._by_name[name]
        except KeyError:
            raise DatasetError(f"no case named {name!r}", self.root) from None

    def split(self, name: str) -> list[Case]:
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r} (expected one of {list(SPLITS)})", self.root)
        return [c for c in self.cases if c.split == name]

    def load_volume(self, name_or_case: str | Case, *, check: bool = True) -> Volume:
        """The case's CT in HU. With a metadata row: its rescale and spacing, voxels as stored (as
        CT-CLIP used CT-RATE); without: the NIfTI header's scaling, spacing and orientation."""
        from engine.io.nifti import read_nifti
        from engine.io.validate import CT_PRACTICE, PHANTOM_GRID

        case = name_or_case if isinstance(name_or_case, Case) else self.case(name_or_case)
        # the project's phantoms may be written on coarse grids (rad3d synth --scale); real CT is held to CT practice
        limits = PHANTOM_GRID if (self.root / "phantom_truth.json").is_file() else CT_PRACTICE
        if case.rescale is not None:
            return read_nifti(case.volume_path, rescale=case.rescale, spacing_mm=case.spacing_mm, reorient=False,
                              check=check, spacing_limits=limits)
        return read_nifti(case.volume_path, check=check, spacing_limits=limits)

    def summary(self) -> dict:
        """Cases and patients per split, and label prevalence per split (None without labels)."""
        out: dict = {"cases": len(self.cases), "patients": len({c.patient_id for c in self.cases}), "splits": {}}
        for split in SPLITS:
            cases = self.split(split)
            entry = {"cases": len(cases), "patients": len({c.patient_id for c in cases})}
            if cases and cases[0].labels is not None:
                prevalence = np.mean([c.labels for c in cases], axis=0)
                entry["prevalence"] = dict(zip(self.label_set.names, prevalence.tolist()))
            out["splits"][split] = entry
        return out


def check_volumes(dataset: CTRateDataset, *, progress: bool = True) -> list[str]:
    """Read every volume of `dataset`; the problems found (one line per bad volume), all of them."""
    from tqdm import tqdm

    from engine.errors import VolumeError

    problems = []
    for case in tqdm(dataset.cases, desc="reading volumes", unit="vol", disable=not progress):
        try:
            dataset.load_volume(case)
        except VolumeError as err:
            problems.append(str(err))
    return problems
