"""`rad3d scan --data ROOT`: check a dataset in CT-RATE's format and summarise it, or list every problem."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="check a dataset (rad3d's flat layout or CT-RATE's released tree) and print cases per split and "
        "label prevalence",
        description="Checks ROOT (flat: volumes/, reports.csv, labels.csv, optional metadata.csv and splits.csv; "
        "or CT-RATE's released tree, its root or its dataset/ folder) and prints a summary with where the "
        "splits come from, or every problem found at once, each naming the file and rows (exit 1). With "
        "--volumes it also reads every volume and checks it is a plausible CT. "
        "Example: rad3d scan --data data/phantoms --volumes",
    )
    parser.add_argument("root", metavar="DIR", nargs="?", help="dataset folder (the same as --data)")
    add_data_arguments(parser, required=False)
    parser.add_argument("--section", choices=("findings", "impression"), default="findings",
                        help="report section that must not be blank (default findings, what is trained)")
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
    lines += [f"note: {n}" for n in dataset.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engine.data import check_volumes, resolve, source_from_args
    from engine.errors import ConfigError, DatasetError

    if args.root and args.data and args.root != args.data:
        raise ConfigError(f"two dataset folders given ({args.root} and --data {args.data}): give one")
    args.data = args.data or args.root
    source = source_from_args(args)
    if source is None:
        raise ConfigError("give the dataset folder: rad3d scan --data ROOT")
    dataset = resolve(source, section=args.section)  # label set: --label-set, phantom truth or ct-rate
    if args.volumes:
        problems = check_volumes(dataset)
        if problems:
            raise DatasetError(f"{len(problems)} of {len(dataset)} volumes are unusable", dataset.root, problems)
    print(format_summary(dataset))
    return 0
