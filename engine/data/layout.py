"""Which files make up a dataset folder: rad3d's flat layout or CT-RATE's released tree.

CT-RATE as released on Hugging Face (ibrahimhamamci/CT-RATE), under its `dataset/` folder:
    train/train_<p>/train_<p>_<s>/train_<p>_<s>_<r>.nii.gz      valid/valid_<p>/valid_<p>_<s>/...
    radiology_text_reports/train_reports.csv, validation_reports.csv
    multi_abnormality_labels/train_predicted_labels.csv, valid_predicted_labels.csv
        (also seen as dataset_multi_abnormality_labels_{train,valid}_predicted_labels.csv: the
        path flattened into the name, as many CT-CLIP-based loaders name them)
    metadata/train_metadata.csv, validation_metadata.csv
CT-RATE v2 adds train_fixed/ and valid_fixed/: the same volumes stored in HU with corrected
headers (CT-CLIP issue #50: applying the metadata rescale to them rescales twice). When a *_fixed
folder is there it is used instead of the plain one, and its files are read by their header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.data.source import DataSource

RELEASE_SPLITS = ("train", "valid")
FIXED_SUFFIX = "_fixed"
RELEASE_FOLDERS = {"reports": "radiology_text_reports", "labels": "multi_abnormality_labels", "metadata": "metadata"}
RELEASE_FILES = {
    "reports": {"train": ("train_reports.csv",), "valid": ("validation_reports.csv",)},
    "labels": {
        "train": ("train_predicted_labels.csv", "dataset_multi_abnormality_labels_train_predicted_labels.csv"),
        "valid": ("valid_predicted_labels.csv", "dataset_multi_abnormality_labels_valid_predicted_labels.csv"),
    },
    "metadata": {"train": ("train_metadata.csv",), "valid": ("validation_metadata.csv",)},
}
FLAT_FILES = {"reports": ("reports.csv", "*reports*.csv"), "labels": ("labels.csv", "*labels*.csv"),
              "metadata": ("metadata.csv", "*metadata*.csv"), "splits": ("splits.csv", "*splits*.csv")}


@dataclass
class Layout:
    root: Path  # the folder holding CSVs and volumes (CT-RATE: its dataset/ folder)
    release: bool  # CT-RATE's released tree
    reports: list[Path] = field(default_factory=list)
    labels: list[Path] = field(default_factory=list)
    metadata: list[Path] = field(default_factory=list)
    splits: Path | None = None
    volume_roots: list[Path] = field(default_factory=list)
    stored_hu_roots: list[Path] = field(default_factory=list)  # CT-RATE *_fixed folders
    notes: list[str] = field(default_factory=list)

    def is_stored_hu(self, path: Path) -> bool:
        return any(root in path.parents for root in self.stored_hu_roots)


def _names(paths) -> str:
    return ", ".join(p.name for p in paths)


def release_root(given: Path) -> Path | None:
    """The CT-RATE `dataset/` folder when `given` is it or holds it; None for a flat folder."""
    if (given / FLAT_FILES["reports"][0]).is_file():
        return None  # a flat folder, whatever else it holds
    for candidate in (given / "dataset", given):
        if (candidate / RELEASE_FOLDERS["reports"]).is_dir() or any(
                (candidate / f"{s}{x}").is_dir() for s in RELEASE_SPLITS for x in ("", FIXED_SUFFIX)):
            return candidate
    return None


def _override(path: str | None, problems: list[str]) -> list[Path] | None:
    """[the file] for a given override, [] when it does not exist (a problem), None when not given."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        problems.append(f"{p}: no such CSV file")
        return []
    return [p]


def _find_flat(root: Path, kind: str, required: bool, problems: list[str]) -> list[Path]:
    default, pattern = FLAT_FILES[kind]
    if (root / default).is_file():
        return [root / default]
    candidates = sorted(root.glob(pattern))
    if len(candidates) == 1:
        return candidates
    if len(candidates) > 1:
        problems.append(f"{root}: several {pattern} files ({_names(candidates)}): pass the one to use "
                        f"with --{kind}-csv")
    elif required:
        problems.append(f"{root}: no {default} (or {pattern})")
    return []


def _find_release(root: Path, kind: str, problems: list[str]) -> list[Path]:
    """One CSV per CT-RATE split found: a known name in its folder (or the dataset folder), else the
    one CSV in its folder whose name holds the split's name."""
    folder = root / RELEASE_FOLDERS[kind]
    found = []
    for split in RELEASE_SPLITS:
        hit = next((d / n for n in RELEASE_FILES[kind][split] for d in (folder, root) if (d / n).is_file()), None)
        if hit is None and folder.is_dir():
            candidates = sorted(folder.glob(f"*{split}*.csv"))
            if len(candidates) == 1:
                hit = candidates[0]
            elif len(candidates) > 1:
                problems.append(f"{folder}: several {split} CSVs ({_names(candidates)}): pass the one to use "
                                f"with --{kind}-csv")
        if hit is not None:
            found.append(hit)
    return found


def find_layout(given: Path, source: DataSource, problems: list[str]) -> Layout:
    """The files of the dataset at `given`, overrides taking the place of what would be found."""
    root = release_root(given)
    if root is None:
        layout = Layout(root=given, release=False)
        for kind in ("reports", "labels", "metadata", "splits"):
            files = _override(getattr(source, f"{kind}_csv"), problems)
            if files is None:
                files = _find_flat(given, kind, kind == "reports", problems)
            if kind == "splits":
                layout.splits = files[0] if files else None
            else:
                setattr(layout, kind, files)
        layout.volume_roots = [given / "volumes" if (given / "volumes").is_dir() else given]
        return layout

    layout = Layout(root=root, release=True)
    for kind in ("reports", "labels", "metadata"):
        files = _override(getattr(source, f"{kind}_csv"), problems)
        setattr(layout, kind, files if files is not None else _find_release(root, kind, problems))
    if not layout.reports and source.reports_csv is None:
        known = " or ".join(n for s in RELEASE_SPLITS for n in RELEASE_FILES["reports"][s])
        problems.append(f"{root / RELEASE_FOLDERS['reports']}: no {known}")
    splits = _override(source.splits_csv, problems)
    layout.splits = splits[0] if splits else None
    for split in RELEASE_SPLITS:
        plain, fixed = root / split, root / f"{split}{FIXED_SUFFIX}"
        if fixed.is_dir():
            layout.volume_roots.append(fixed)
            layout.stored_hu_roots.append(fixed)
            if plain.is_dir():
                layout.notes.append(f"{fixed.name}/ used instead of {plain.name}/ (CT-RATE v2: HU in the files)")
        elif plain.is_dir():
            layout.volume_roots.append(plain)
    if not layout.volume_roots:
        problems.append(f"{root}: no volume folder ({', '.join(f'{s}/' for s in RELEASE_SPLITS)})")
    return layout
