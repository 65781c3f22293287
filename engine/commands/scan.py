"""`rad3d scan DIR`: check a dataset in CT-RATE's format and summarise it, or list every problem."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="check a CT-RATE-format dataset folder and print cases per split and label prevalence",
        description="Checks DIR (volumes/, reports.csv, labels.csv, optional metadata.csv and splits.csv) and "
        "prints a summary, or every problem found at once (exit 1). With --volumes it also reads every "
        "volume and checks it is a plausible CT. Example: rad3d scan data/phantoms --volumes",
    )
    parser.add_argument("root", metavar="DIR", help="dataset folder")
    parser.add_argument("--reports-csv", help="reports CSV (default DIR/reports.csv)")
    parser.add_argument("--labels-csv", help="labels CSV (default DIR/labels.csv)")
    parser.add_argument("--metadata-csv", help="metadata CSV with RescaleSlope/Intercept and spacing (optional)")
    parser.add_argument("--splits-csv", help="VolumeName,split CSV (default DIR/splits.csv; else split by patient)")
    parser.add_argument("--label-set", default="ct-rate", help="built-in label set name or JSON file (default ct-rate)")
    parser.add_argument("--volumes", action="store_true", help="also read and check every volume (slow)")
    parser.set_defaults(handler=run)


def format_summary(dataset) -> str:
    summary = dataset.summary()
    splits = summary["splits"]
    lines = [
        f"{dataset.root}: {summary['cases']} cases, {summary['patients']} patients ({dataset.split_source})",
        f"{'split':<8}{'cases':>8}{'patients':>10}",
    ]
    lines += [f"{name:<8}{s['cases']:>8}{s['patients']:>10}" for name, s in splits.items()]
    with_labels = [name for name, s in splits.items() if "prevalence" in s]
    if with_labels:
        width = max(len(n) for n in dataset.label_set.names) + 2
        lines.append(f"label prevalence ({dataset.label_set.name})")
        lines.append(f"{'':<{width}}" + "".join(f"{n:>8}" for n in with_labels))
        for label in dataset.label_set.names:
            lines.append(f"{label:<{width}}" + "".join(f"{splits[n]['prevalence'][label]:>8.3f}" for n in with_labels))
    else:
        lines.append("no labels CSV: label prevalence unknown")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engine.data import CTRateDataset, check_volumes
    from engine.errors import DatasetError
    from engine.labels import load_label_set

    dataset = CTRateDataset.open(
        args.root,
        reports_csv=args.reports_csv,
        labels_csv=args.labels_csv,
        metadata_csv=args.metadata_csv,
        splits_csv=args.splits_csv,
        label_set=load_label_set(args.label_set),
    )
    if args.volumes:
        problems = check_volumes(dataset)
        if problems:
            raise DatasetError(f"{len(problems)} of {len(dataset)} volumes are unusable", dataset.root, problems)
    print(format_summary(dataset))
    return 0
