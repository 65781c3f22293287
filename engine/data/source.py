"""Where a dataset is and which of its files to use: the one value every data command, config and
record carries (`--data ROOT` plus optional overrides), and the argparse helper that builds it."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from engine.config import JsonConfig
from engine.errors import ConfigError

_OVERRIDES = ("reports_csv", "labels_csv", "metadata_csv", "splits_csv", "split_column")


@dataclass(frozen=True)
class DataSource(JsonConfig):
    """A dataset folder (rad3d's flat layout or CT-RATE's released tree, its root or its `dataset/`
    folder) and optional overrides of what the resolver would find there by itself.

    reports_csv / labels_csv / metadata_csv: use this file instead of the one(s) found in `root`.
    splits_csv: a CSV of VolumeName + split column. split_column: the column that holds each
    volume's split (train/valid/test), looked up in the splits CSV, else the reports CSV, else the
    metadata CSV; it replaces the split the layout would give."""

    root: str
    reports_csv: str | None = None
    labels_csv: str | None = None
    metadata_csv: str | None = None
    splits_csv: str | None = None
    split_column: str | None = None
    label_set: str | None = None  # built-in name or JSON file; None: phantom_truth.json's, else ct-rate

    def __post_init__(self):
        if not str(self.root).strip():
            raise ConfigError("the dataset folder (--data) is empty")
        object.__setattr__(self, "root", str(self.root))
        for name in (*_OVERRIDES, "label_set"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))

    def __str__(self) -> str:  # messages and tables name the folder
        return self.root

    def __fspath__(self) -> str:  # so code that only needs the folder can take a DataSource as a path
        return self.root

    @property
    def overrides(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in _OVERRIDES if getattr(self, k) is not None}

    @classmethod
    def _json_in(cls, value) -> dict:
        """Older records store the folder alone, as a path string."""
        if isinstance(value, (str, Path)) and not str(value).lstrip().startswith("{"):
            return {"root": str(value)}
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as err:
                raise ConfigError(f"data source is not valid JSON ({err})") from None
        return value

    def _json_out(self, data: dict) -> dict:
        # Left out when unset, so records written before the setting existed keep their form.
        if self.label_set is None:
            del data["label_set"]
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def coerce(cls, value) -> DataSource:
        """A DataSource from what configs and records hold: a DataSource, a dict, a folder path,
        or a string that is either a path or this class's JSON (older records store a path)."""
        if isinstance(value, (DataSource, dict, str, Path)):
            return cls.from_dict(value)
        raise ConfigError(f"cannot read a data source from {type(value).__name__} {value!r}")

    def absolute(self) -> DataSource:
        """The same source with every path made absolute (for records read from elsewhere)."""
        paths = {k: str(Path(v).resolve()) for k, v in self.overrides.items() if k != "split_column"}
        if self.label_set and Path(self.label_set).suffix == ".json" and Path(self.label_set).is_file():
            paths["label_set"] = str(Path(self.label_set).resolve())  # a file, not a built-in name
        return DataSource(**{**self.to_dict(), "root": str(Path(self.root).resolve()), **paths})


def add_data_arguments(parser: argparse.ArgumentParser, *, required: bool = True, help: str | None = None) -> None:
    """`--data ROOT` and the overrides, the same for every command that reads a dataset."""
    parser.add_argument(
        "--data", required=required, metavar="ROOT",
        help=help or "dataset folder: rad3d's flat layout (volumes/, reports.csv, labels.csv ...) or CT-RATE's "
        "released tree (its root or its dataset/ folder)")
    parser.add_argument("--reports-csv", metavar="CSV", help="reports CSV to use instead of the one(s) found in ROOT")
    parser.add_argument("--labels-csv", metavar="CSV", help="labels CSV to use instead of the one(s) found in ROOT")
    parser.add_argument("--metadata-csv", metavar="CSV",
                        help="metadata CSV (RescaleSlope/Intercept, XYSpacing, ZSpacing) instead of the one(s) in ROOT")
    parser.add_argument("--splits-csv", metavar="CSV", help="VolumeName + split CSV (default ROOT/splits.csv if present)")
    parser.add_argument("--split-column", metavar="NAME",
                        help="column holding each volume's split (train/valid/test), in the splits, reports or "
                        "metadata CSV; replaces the layout's split")
    parser.add_argument("--label-set", metavar="NAME|FILE",
                        help="the dataset's label set, a built-in name or a label-set JSON (default: the "
                        "label_set of ROOT/phantom_truth.json, else ct-rate); labels CSV columns are checked against it")


def source_from_args(args: argparse.Namespace) -> DataSource | None:
    """The DataSource the command line names (None without --data)."""
    if not getattr(args, "data", None):
        overrides = [k for k in (*_OVERRIDES, "label_set") if getattr(args, k, None)]
        if overrides:
            raise ConfigError(f"--{overrides[0].replace('_', '-')} needs --data")
        return None
    return DataSource(root=args.data, label_set=getattr(args, "label_set", None),
                      **{k: getattr(args, k, None) for k in _OVERRIDES})
