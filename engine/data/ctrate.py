"""A dataset in CT-RATE's format, in either of two layouts, read by one resolver.

Flat layout (rad3d's own, `rad3d synth`):
    DIR/volumes/<any nesting>/<VolumeName>   e.g. volumes/train_1/train_1_a/train_1_a_1.nii.gz
    DIR/reports.csv    VolumeName, Findings_EN, Impressions_EN (ClinicalInformation_EN, Technique_EN)
    DIR/labels.csv     VolumeName + one 0/1 column per finding of the label set
    DIR/metadata.csv   optional: VolumeName, RescaleSlope, RescaleIntercept, XYSpacing, ZSpacing
    DIR/splits.csv     optional: VolumeName, split (train/valid/test); else split by patient

CT-RATE's released tree (engine.data.layout): ROOT or ROOT/dataset with train/, valid/,
radiology_text_reports/, multi_abnormality_labels/, metadata/; CT-RATE's valid is our test split
and a valid split is carved from its train by patient.

`resolve` checks everything at once and raises one DatasetError listing every problem found,
each naming the file, the rows (VolumeName and line) and what is wrong. Extra columns and a UTF-8
byte-order mark are accepted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.layout import Layout, find_layout
from engine.data.source import DataSource
from engine.data.splits import (
    SPLITS,
    VOLUME_SUFFIXES,
    carve_by_patient,
    ctrate_name_parts,
    is_volume_file,
    leaking_patients,
    patient_id,
    split_by_patient,
)
from engine.errors import DatasetError
from engine.labels import LabelSet, ct_rate, load_label_set
from engine.volume import Volume

EMPTY_SECTION = "Not given."
SECTION_COLUMNS = {"findings": "Findings_EN", "impression": "Impressions_EN"}
REPORT_COLUMNS = ("VolumeName", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS = ("VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing")
SPLIT_COLUMN = "split"  # the splits CSV's column unless --split-column names another
# CT-RATE has no validation split of its own besides the one papers report on: ours is carved from
# its train split, by patient, with these defaults (recorded in every dataset's split_source).
VALID_FRACTION = 0.1
VALID_SEED = 0
_LISTED = 5  # rows shown per problem before "and N more"

__all__ = ["Case", "CTRateDataset", "resolve", "check_volumes", "parse_xy_spacing", "VOLUME_SUFFIXES"]


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
    as_stored: bool = False  # CT-RATE file in HU already (a *_fixed folder): no metadata rescale, no reorientation

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


# -- tables: rows of one kind from one or more CSV files, each row knowing its file and line ------------

@dataclass
class Table:
    frame: pd.DataFrame  # index VolumeName; columns as read plus "_file" and "_line"
    columns: dict[Path, list[str]]  # each file read, with its own columns

    @property
    def files(self) -> list[Path]:
        return list(self.columns)

    @property
    def label(self) -> str:
        return " + ".join(f.name for f in self.files)

    def where(self, name: str) -> str:
        row = self.frame.loc[name]
        return f"{name} ({row['_file']} line {row['_line']})"


def _rows(df: pd.DataFrame) -> list[str]:
    return [f"{n} (line {line})" for n, line in zip(df["VolumeName"], df["_line"])]


def _per_file(df: pd.DataFrame, what: str, problems: list[str]) -> None:
    """One problem per file naming its rows: "<file>: <what>: <VolumeName> (line n), ..."."""
    for file, rows in df.groupby("_file", sort=False):
        problems.append(f"{file}: {what}: {_names(_rows(rows))}")


def _read_csv(path: Path, required: tuple[str, ...], problems: list[str]) -> pd.DataFrame | None:
    try:
        # utf-8-sig: spreadsheet programs put a byte-order mark before the first column's name.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        problems.append(f"{path.name}: cannot read CSV ({err})")
        return None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.append(f"{path.name}: missing columns {missing}")
        return None
    df["_file"] = path.name
    df["_line"] = np.arange(len(df)) + 2  # line 1 is the header
    df["VolumeName"] = df["VolumeName"].str.strip()
    empty = df[df["VolumeName"] == ""]
    if len(empty):
        problems.append(f"{path.name}: empty VolumeName on lines {_names(empty['_line'])}")
    return df[df["VolumeName"] != ""]


def _read_table(paths: list[Path], required: tuple[str, ...], problems: list[str]) -> Table | None:
    read = {p: _read_csv(p, required, problems) for p in paths}
    columns = {p: [c for c in f.columns if c not in ("_file", "_line")] for p, f in read.items() if f is not None}
    frames = [f for f in read.values() if f is not None]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    dupes = df[df["VolumeName"].duplicated(keep=False)]
    if len(dupes):
        where = [f"{name} ({', '.join(f'{f} line {n}' for f, n in zip(g['_file'], g['_line']))})"
                 for name, g in dupes.groupby("VolumeName", sort=True)]
        files = ", ".join(dict.fromkeys(dupes["_file"]))
        problems.append(f"{files}: duplicate VolumeName {_names(where)}")
        df = df.drop_duplicates("VolumeName")
    return Table(df.set_index("VolumeName", drop=False), columns)


def index_volume_files(volume_roots: list[Path], problems: list[str]) -> dict[str, Path]:
    """VolumeName (file name) → path, for every volume file under the roots, at any depth."""
    found: dict[str, Path] = {}
    clashes: set[str] = set()
    for volume_root in volume_roots:
        for dirpath, _dirs, files in os.walk(volume_root):
            for f in files:
                if is_volume_file(f):
                    if f in found:
                        clashes.add(f)
                    found.setdefault(f, Path(dirpath, f))
    if clashes:
        where = ", ".join(str(r) for r in volume_roots)
        problems.append(f"{where}: the same volume file name in several folders: {_names(sorted(clashes))}")
    return found


def _label_matrix(table: Table, label_set: LabelSet, problems: list[str]) -> dict | None:
    """VolumeName → float32 label vector in label-set order; None when a file lacks
    label columns. Other columns are accepted, except findings of a built-in label set that this
    one lacks: the file is labelled for another label set, and those findings would be dropped
    unseen. (Columns beside missing ones are named, as they may be the missing findings misspelt.)"""
    known = _builtin_findings()
    complete = True
    for path, columns in table.columns.items():
        cols = [c for c in columns if c != "VolumeName"]
        missing = [n for n in label_set.names if n not in cols]
        extra = [c for c in cols if c not in label_set.names]
        if missing:
            hint = f"; it has columns not in label set {label_set.name!r}: {extra}" if extra else ""
            problems.append(f"{path.name}: lacks label columns {missing}{hint}")
            complete = False
        elif [c for c in extra if c in known]:
            problems.append(f"{path.name}: has columns not in label set {label_set.name!r} that are findings of "
                            f"another label set: {[c for c in extra if c in known]}")
    if not complete:
        return None
    df = table.frame  # every row: a bad value is a bad file, whether or not its volume is here
    raw = df[list(label_set.names)]
    values = raw.apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
    bad = ~values.isin([0, 1])
    if bad.to_numpy().any():
        by_file: dict[str, list[str]] = {}
        for r, c in zip(*np.nonzero(bad.to_numpy())):
            by_file.setdefault(df["_file"].iat[r], []).append(
                f"{raw.index[r]} {raw.columns[c]}={raw.iat[r, c]!r} (line {df['_line'].iat[r]})")
        for file, cells in by_file.items():
            problems.append(f"{file}: label values not 0/1: {_names(cells)}")
    matrix = values.fillna(0).to_numpy(dtype=np.float32)
    return {name: matrix[i] for i, name in enumerate(df.index)}


def _builtin_findings() -> set[str]:
    from engine.labels import builtin_label_sets, load_label_set

    return {n for name in builtin_label_sets() for n in load_label_set(name).names}


def _metadata(table: Table, names: list[str], problems: list[str]) -> dict:
    """VolumeName → ((slope, intercept), (x, y, z) spacing) for `names`; bad rows are problems."""
    out: dict = {}
    bad: dict[str, list[str]] = {}
    df = table.frame.loc[[n for n in names if n in table.frame.index]]
    for name, row in df.iterrows():
        try:
            slope, intercept, z = float(row["RescaleSlope"]), float(row["RescaleIntercept"]), float(row["ZSpacing"])
            x, y = parse_xy_spacing(row["XYSpacing"])
            if not (np.isfinite([slope, intercept, z]).all() and slope != 0 and z > 0):
                raise ValueError("RescaleSlope must be non-zero and ZSpacing positive")
        except ValueError as err:
            bad.setdefault(row["_file"], []).append(f"{name} (line {row['_line']}: {err})")
            continue
        out[str(name)] = ((slope, intercept), (x, y, z))
    for file, rows in bad.items():
        problems.append(f"{file}: unparseable rows: {_names(rows)}")
    return out


def _missing_rows(names: list[str], table: Table, what: str, problems: list[str]) -> None:
    absent = [n for n in names if n not in table.frame.index]
    if absent:
        problems.append(f"{len(absent)} volumes {what} have no row in {table.label}: {_names(absent)}")


# -- splits -----------------------------------------------------------------------------------------------

def _split_from_column(column: str, tables: list[Table], names: list[str], problems: list[str]):
    """(splits, source) from the first table with `column`; (None, "") with a problem if none has it."""
    for table in tables:
        if column in table.frame.columns:
            rows = table.frame[table.frame.index.isin(names)]
            splits = {n: s.strip().lower() for n, s in rows[column].items()}
            unknown = rows[~rows[column].str.strip().str.lower().isin(SPLITS)]
            if len(unknown):
                _per_file(unknown, f"unknown split names {sorted(set(unknown[column]))} in column {column!r} "
                          f"(expected {list(SPLITS)})", problems)
            no_split = [n for n in names if n not in splits]
            if no_split:
                problems.append(f"{len(no_split)} volumes have no row in {table.label}: {_names(no_split)}")
            for patient, sides in sorted(leaking_patients({n: s for n, s in splits.items() if s in SPLITS}).items()):
                problems.append(f"{table.label}: patient {patient} is in several splits ({', '.join(sorted(sides))})")
            source = table.label if column == SPLIT_COLUMN else f"column {column!r} of {table.label}"
            return splits, source
    problems.append(f"no column {column!r} in {', '.join(t.label for t in tables) or 'any CSV'}")
    return None, ""


def _release_splits(names: list[str], problems: list[str], *, fraction: float, seed: int):
    """CT-RATE's own split kept: its valid is our test; our valid carved from its train by patient."""
    release_split = {n: (ctrate_name_parts(n) or {}).get("split", "") for n in names}
    odd = [n for n, s in release_split.items() if s not in ("train", "valid")]
    if odd:
        problems.append(f"{len(odd)} volume names are not CT-RATE's train_<p>_<s>_<r> / valid_<p>_<s>_<r>: {_names(odd)}")
    train = [n for n in names if release_split[n] == "train"]
    carved = carve_by_patient(train, fraction, seed)
    splits = {n: "test" if s == "valid" else ("valid" if n in carved else "train") for n, s in release_split.items()}
    source = (f"CT-RATE release: valid->test; valid carved from train by patient, seed {seed}, "
              f"fraction {fraction:g}")
    return splits, source


# -- the dataset ------------------------------------------------------------------------------------------

@dataclass
class CTRateDataset:
    root: Path  # the folder that holds the CSVs and volumes (CT-RATE: its dataset/ folder)
    cases: list[Case]
    label_set: LabelSet
    csv_paths: dict[str, list[Path]] = field(default_factory=dict)
    split_source: str = "splits.csv"
    source: DataSource | None = None
    layout: str = "flat"  # "flat" or "ct-rate"
    notes: list[str] = field(default_factory=list)  # facts worth printing that are not problems

    @classmethod
    def open(cls, root, *, reports_csv=None, labels_csv=None, metadata_csv=None, splits_csv=None,
             split_column=None, label_set: LabelSet | None = None, section: str | None = "findings",
             split_seed: int = 0) -> CTRateDataset:
        """`resolve` with the overrides as keywords (kept for callers that name a folder)."""
        source = DataSource.coerce(root)
        extra = {k: v for k, v in dict(reports_csv=reports_csv, labels_csv=labels_csv, metadata_csv=metadata_csv,
                                       splits_csv=splits_csv, split_column=split_column).items() if v is not None}
        if extra:
            source = DataSource(**{**source.to_dict(), **{k: str(v) for k, v in extra.items()}})
        return resolve(source, label_set=label_set, section=section, split_seed=split_seed)

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
        CT-CLIP used CT-RATE); a CT-RATE *_fixed file: its header, voxels as stored; otherwise the
        NIfTI header's scaling, spacing and orientation."""
        from engine.io.nifti import read_nifti
        from engine.io.validate import CT_PRACTICE, PHANTOM_GRID

        case = name_or_case if isinstance(name_or_case, Case) else self.case(name_or_case)
        # the project's phantoms may be written on coarse grids (rad3d synth --scale); real CT is held to CT practice
        limits = PHANTOM_GRID if (self.root / "phantom_truth.json").is_file() else CT_PRACTICE
        if case.rescale is not None:
            return read_nifti(case.volume_path, rescale=case.rescale, spacing_mm=case.spacing_mm, reorient=False,
                              check=check, spacing_limits=limits)
        if case.as_stored:
            return read_nifti(case.volume_path, reorient=False, check=check, spacing_limits=limits)
        return read_nifti(case.volume_path, check=check, spacing_limits=limits)

    def summary(self) -> dict:
        """Cases and patients per split, and label prevalence per split (None without labels)."""
        out: dict = {"cases": len(self.cases), "patients": len({c.patient_id for c in self.cases}),
                     "layout": self.layout, "split_source": self.split_source, "splits": {}}
        for split in SPLITS:
            cases = self.split(split)
            entry = {"cases": len(cases), "patients": len({c.patient_id for c in cases})}
            if cases and cases[0].labels is not None:
                prevalence = np.mean([c.labels for c in cases], axis=0)
                entry["prevalence"] = dict(zip(self.label_set.names, prevalence.tolist()))
            out["splits"][split] = entry
        return out


def dataset_label_set(source: DataSource | str | Path) -> LabelSet:
    """The label set a dataset's labels CSV is read with: the source's (`--label-set`), else the
    `label_set` key of ROOT/phantom_truth.json (written by `rad3d synth` for a non-default domain),
    else CT-RATE's 18."""
    source = DataSource.coerce(source)
    if source.label_set:
        return load_label_set(source.label_set)
    truth = Path(source.root) / "phantom_truth.json"
    if truth.is_file():
        try:
            name = json.loads(truth.read_text()).get("label_set")
        except (json.JSONDecodeError, AttributeError) as err:
            raise DatasetError(f"unreadable phantom truth ({err})", truth) from None
        if name:
            return load_label_set(name)
    return ct_rate()


def resolve(source: DataSource | str | Path, *, label_set: LabelSet | None = None, section: str | None = "findings",
            split_seed: int = 0, valid_fraction: float = VALID_FRACTION) -> CTRateDataset:
    """The dataset a DataSource names, in either layout, or one DatasetError listing every problem.

    section: the report section the caller needs ("findings", "impression", or None for neither);
    a blank cell in its column is a problem ("Not given.", CT-RATE's empty-section marker, is not)."""
    source = DataSource.coerce(source)
    given = Path(source.root)
    if not given.is_dir():
        raise DatasetError("no such dataset folder", given)
    if section is not None and section not in SECTION_COLUMNS:
        raise DatasetError(f"unknown report section {section!r} (expected {list(SECTION_COLUMNS)})", given)
    label_set = label_set or dataset_label_set(source)
    problems: list[str] = []
    layout: Layout = find_layout(given, source, problems)

    reports = _read_table(layout.reports, REPORT_COLUMNS, problems) if layout.reports else None
    labels_table = _read_table(layout.labels, ("VolumeName",), problems) if layout.labels else None
    meta_table = _read_table(layout.metadata, METADATA_COLUMNS, problems) if layout.metadata else None
    splits_table = _read_table([layout.splits], ("VolumeName",), problems) if layout.splits else None
    files = index_volume_files(layout.volume_roots, problems)
    where = ", ".join(str(r) for r in layout.volume_roots)
    notes: list[str] = []

    names = _present_volumes(layout, reports, files, where, problems, notes)
    if reports is not None and section is not None:
        column = SECTION_COLUMNS[section]
        rows = reports.frame.loc[names]
        blank = rows[rows[column].str.strip() == ""]
        if len(blank):
            _per_file(blank, f"blank {column} (the {section} section) in {len(blank)} rows", problems)
    labels = _labels(layout, names, reports, labels_table, label_set, problems) if labels_table is not None else None
    stored = {n for n in names if n in files and layout.is_stored_hu(files[n])}
    meta = _volume_metadata(meta_table, [n for n in names if n not in stored], problems) if meta_table is not None else {}
    column = source.split_column or (SPLIT_COLUMN if splits_table is not None else None)
    tables = [t for t in (splits_table, reports, meta_table) if t is not None]
    splits, split_source = _assign_splits(layout, names, column, tables, problems, split_seed, valid_fraction)

    if problems:
        raise DatasetError(f"{len(problems)} problems", given, problems)

    cases = []
    for name in names:
        row = reports.frame.loc[name]
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
            as_stored=name in stored,
        ))
    return CTRateDataset(
        root=layout.root, cases=cases, label_set=label_set, split_source=split_source, source=source,
        layout="ct-rate" if layout.release else "flat", notes=notes + layout.notes,
        csv_paths={"reports": list(layout.reports), "labels": list(layout.labels), "metadata": list(layout.metadata),
                   "splits": [layout.splits] if layout.splits else []},
    )


def _assign_splits(layout: Layout, names: list[str], column: str | None, tables: list, problems: list[str],
                   seed: int, fraction: float) -> tuple[dict[str, str], str]:
    """train/valid/test per volume and how they were chosen: a split column when one is given,
    CT-RATE's own split (valid -> test, valid carved from train), or a split by patient."""
    if column:
        return _split_from_column(column, tables, names, problems)
    if layout.release:
        return _release_splits(names, problems, fraction=fraction, seed=seed)
    return split_by_patient(names, seed=seed), f"split by patient (seed {seed})"


def _present_volumes(layout: Layout, reports, files: dict, where: str, problems: list[str],
                     notes: list[str]) -> list[str]:
    """The volume names of the dataset: every row of the reports CSV (flat layout, each must have its
    file), or the rows whose file is present (CT-RATE as released, often partly downloaded)."""
    listed = list(reports.frame.index) if reports is not None else []
    if not layout.release:
        missing_files = [n for n in listed if n not in files]
        if missing_files:
            problems.append(f"{len(missing_files)} volumes listed in {reports.label} have no file under "
                            f"{where}: {_names(missing_files)}")
        return listed
    names = [n for n in listed if n in files]
    absent = len(listed) - len(names)
    if absent:
        notes.append(f"{absent} of {len(listed)} volumes listed in {reports.label} are not under {where} "
                     "(not downloaded?): left out")
    if reports is not None and not names and listed:
        problems.append(f"none of the {len(listed)} volumes listed in {reports.label} is under {where}")
    unlisted = sorted(set(files) - set(listed))
    if reports is not None and unlisted:
        problems.append(f"{len(unlisted)} volume files under {where} have no row in {reports.label}: "
                        f"{_names(unlisted)}")
    return names


def _labels(layout: Layout, names: list[str], reports, labels_table, label_set: LabelSet, problems: list[str]) -> dict:
    labels = _label_matrix(labels_table, label_set, problems)
    _missing_rows(names, labels_table, f"in {reports.label if reports else 'the reports'}", problems)
    if not layout.release and reports is not None:
        only_labels = [n for n in labels_table.frame.index if n not in reports.frame.index]
        if only_labels:
            problems.append(f"{len(only_labels)} volumes in {labels_table.label} have no row in "
                            f"{reports.label}: {_names(only_labels)}")
    return labels


def _volume_metadata(meta_table, needs_meta: list[str], problems: list[str]) -> dict:
    """(rescale, spacing) per volume whose stored values need the metadata CSV to become HU."""
    meta = _metadata(meta_table, needs_meta, problems)
    no_meta = [n for n in needs_meta if n not in meta_table.frame.index]
    if no_meta:
        problems.append(f"{len(no_meta)} volumes have no row in {meta_table.label}: {_names(no_meta)}")
    return meta


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
