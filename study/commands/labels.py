"""`rad3d labels derive | split`: a label set derived from a dataset's reports, and multi-label
stratified, patient-grouped splits over any labels CSV."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("labels", help="derive a label set from the reports; stratified patient splits",
                              description="Label sets from report text and splits stratified by them (RAD3D's "
                              "recipe for a dataset without released labels, such as INSPECT).")
    sub = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)

    d = sub.add_parser("derive", help="candidate entities → negation-aware counts → concepts kept by frequency",
                       description="Derive a label set from the reports of --data (either layout): the vocabulary "
                       "of the built-in label sets plus noun phrases, counted positive by the findings extractor "
                       "(negated and uncertain mentions do not count), synonyms merged into concepts, kept when "
                       "positive in at least --min-count reports. Writes the label-set JSON (names, synonyms, "
                       "counts) and a labels CSV (VolumeName + one 0/1 column per label). When the dataset has a "
                       "labels CSV (a phantom set's planted truth), prints each finding's precision and recall. "
                       "Example: rad3d labels derive --data data/ph --min-count 5 --out ph.json --out-csv ph.csv")
    add_data_arguments(d)
    d.add_argument("--min-count", type=int, required=True, metavar="N",
                   help="keep a concept positive in at least N reports")
    d.add_argument("--out", metavar="JSON", help="label-set JSON to write (read by every --label-set option)")
    d.add_argument("--out-csv", metavar="CSV", help="labels CSV to write: VolumeName + one 0/1 column per label")
    d.add_argument("--name", default="derived", help="the label set's name (default derived)")
    d.add_argument("--vocabulary", nargs="+", metavar="SET",
                   help="label sets (built-in names or JSON files) whose findings are the vocabulary "
                   "(default: every built-in)")
    d.add_argument("--section", choices=("findings", "impression", "both"), default="both",
                   help="report text to read (default both)")
    d.set_defaults(handler=run_derive)

    s = sub.add_parser("split", help="multi-label stratified train/valid/test by patient (iterative stratification)",
                       description="Assign every volume of --data to train/valid/test: patients (labels OR-ed over "
                       "their volumes) stratified over all labels with iterative stratification, each volume "
                       "following its patient. Writes splits.csv (VolumeName, split) and prints each label's "
                       "prevalence per split. Labels: the dataset's labels CSV or --labels-csv (e.g. from "
                       "`labels derive`). Example: rad3d labels split --data data/ph --labels-csv ph.csv "
                       "--fractions 0.7 0.15 0.15 --seed 0 --out data/ph/splits.csv")
    add_data_arguments(s)
    s.add_argument("--fractions", nargs=3, type=float, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VALID", "TEST"),
                   help="fractions of the patients (default 0.7 0.15 0.15; must sum to 1)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--out", required=True, metavar="CSV", help="splits CSV to write (VolumeName, split)")
    s.set_defaults(handler=run_split)


def _write_csv(frame, path, *, keep_temporary: bool = False):
    """Through a temporary file and a rename: a reader never sees half a CSV, a failed write leaves the old one.
    keep_temporary: return the temporary file, for the caller to rename once its other outputs are written."""
    import contextlib
    import os
    from pathlib import Path

    from engine.errors import ConfigError

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(tmp, index=False)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write: {err.strerror or err}", path) from None
    if keep_temporary:
        return tmp
    os.replace(tmp, path)
    return path


def reference_label_set(source):
    """The label set of the dataset's labels CSV (its columns, with the vocabulary's synonyms where a
    built-in set has the same finding), or None when it has none."""
    from pathlib import Path

    import pandas as pd

    from engine.data.layout import find_layout
    from engine.errors import DatasetError
    from engine.labels import LabelSet
    from study.label_derivation import vocabulary

    if not Path(source.root).is_dir():
        raise DatasetError("no such dataset folder", source.root)
    problems: list[str] = []
    layout = find_layout(Path(source.root), source, problems)
    if problems or not layout.labels:
        return None  # resolve names the problems
    try:
        names = [c for c in pd.read_csv(layout.labels[0], nrows=0).columns if c != "VolumeName"]
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read the labels CSV: {err}", layout.labels[0]) from None
    vocab, _ = vocabulary()
    return LabelSet("reference", tuple(names), {n: vocab.synonyms.get(n, ()) for n in names})


def _texts(dataset, section: str) -> list[str]:
    parts = {"findings": lambda c: c.findings, "impression": lambda c: c.impression,
             "both": lambda c: f"{c.findings}\n{c.impression}"}[section]
    return [parts(c) for c in dataset]


def run_derive(args: argparse.Namespace) -> int:
    import pandas as pd

    from engine.config import write_json
    from engine.data import resolve, source_from_args
    from engine.errors import ConfigError
    from study.label_derivation import compare_with_truth, derive_labels

    source = source_from_args(args)
    reference = reference_label_set(source)
    dataset = resolve(source, label_set=reference, section=None)
    names = [c.volume_name for c in dataset]
    derived = derive_labels(names, _texts(dataset, args.section), min_count=args.min_count, name=args.name,
                            vocabulary_sets=args.vocabulary, progress=True)
    print(f"{len(derived.kept)} labels from {len(names)} reports ({len(derived.candidates)} candidate concepts, "
          f"kept: positive in >= {args.min_count}):")
    print(f"  {'label':40s} {'positive':>8s} {'uncertain':>9s} {'negative':>8s}  source")
    for c in derived.kept:
        print(f"  {c.name:40s} {c.positive:8d} {c.uncertain:9d} {c.negative:8d}  {c.source}")
    if reference is not None:
        import numpy as np

        truth = np.array([c.labels for c in dataset])
        rows = compare_with_truth(derived, reference, truth)
        print(f"against the dataset's labels ({dataset.csv_paths['labels'][0].name}):")
        print(f"  {'finding':36s} {'derived label':36s} {'truth':>5s} {'derived':>7s} {'precision':>9s} {'recall':>6s}")
        for r in rows:
            p, rc = (f"{v:.3f}" if v is not None else "-" for v in (r.precision, r.recall))
            print(f"  {r.finding:36s} {r.label or '(not found)':36s} {r.truth_positive:5d} {r.derived_positive:7d} "
                  f"{p:>9s} {rc:>6s}")
        extra = sorted(set(derived.label_set.names) - {r.label for r in rows})
        print(f"  derived labels naming no reference finding: {', '.join(extra) or 'none'}")
    frame = pd.DataFrame(derived.matrix, columns=list(derived.label_set.names))
    frame.insert(0, "VolumeName", names)
    # the CSV is written beside its final name first, so a failure writing either file leaves neither new
    tmp = _write_csv(frame, args.out_csv, keep_temporary=True) if args.out_csv else None
    try:
        if args.out:
            try:
                write_json(args.out, derived.label_set_json())
            except OSError as err:
                raise ConfigError(f"cannot write the label set: {err.strerror or err}", args.out) from None
            print(f"label set written to {args.out}")
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    if tmp is not None:
        tmp.replace(args.out_csv)
        print(f"labels written to {args.out_csv}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from engine.data import resolve, source_from_args
    from engine.errors import DatasetError
    from engine.labels import load_label_set
    from study.stratified_split import check_fractions, stratified_split

    fractions = check_fractions(args.fractions)  # before any file is read
    source = source_from_args(args)
    label_set = load_label_set(args.label_set) if args.label_set else reference_label_set(source)
    if label_set is None:
        raise DatasetError("no labels CSV to stratify by (give --labels-csv)", source.root)
    dataset = resolve(source, label_set=label_set, section=None)
    names = [c.volume_name for c in dataset]
    matrix = np.array([c.labels for c in dataset], dtype=np.int8)
    split = stratified_split(names, matrix, label_set.names, fractions, args.seed)
    _write_csv(pd.DataFrame({"VolumeName": names, "split": [split.splits[n] for n in names]}), args.out)
    _print_prevalence(split, names, matrix, args.seed)
    print(f"splits written to {args.out}")
    return 0


def _print_prevalence(split, names, matrix, seed: int) -> None:
    from engine.data import SPLITS, patient_id

    note = "" if split.seed == seed else f" (seed {seed} left a label out of a split; seed {split.seed} did not)"
    print(f"iterative stratification by patient, seed {split.seed}{note}; positive volumes (prevalence) per split:")
    heads = [f"all ({len(names)} vol)"]
    for s in SPLITS:
        vols = [n for n in names if split.splits[n] == s]
        heads.append(f"{s} ({len(vols)} vol, {len({patient_id(n) for n in vols})} pt)")
    print(f"  {'label':32s}" + "".join(f"{h:>24s}" for h in heads))
    table = split.prevalence(names, matrix)
    for j, label in enumerate(split.label_names):
        cells = [f"{int(matrix[:, j].sum())} ({matrix[:, j].mean():.1%})"]
        cells += [f"{table[s][label][0]} ({table[s][label][1]:.1%})" for s in SPLITS]
        print(f"  {label[:32]:32s}" + "".join(f"{c:>24s}" for c in cells))
