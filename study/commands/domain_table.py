"""`rad3d domain-table`: image models' classifier AUROC on several datasets (in- and out-of-domain)."""

from __future__ import annotations

import argparse


def _pairs(specs: list[str], what: str) -> dict[str, str]:
    from pathlib import Path

    from engine.errors import ConfigError

    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if name in out:
            raise ConfigError(f"{what} name {name!r} given twice")
        out[name] = path
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "domain-table", help="classifier macro AUROC of image models on several datasets (the Table 4 shape)",
        description="Score each image model's head on each dataset's test split over the findings both share "
        "(logits via `rad3d embed` caches under --work, labels from the dataset: its phantom_truth.json label "
        "set or ct-rate). Example: rad3d domain-table --image-models base=IM adapted=IM_TUNED "
        "--datasets ct-rate-like=data/ph inspect-like=data/insp --work work/domain --out table.md")
    p.add_argument("--image-models", nargs="+", required=True, metavar="NAME=DIR", help="image model folders or runs")
    p.add_argument("--datasets", nargs="+", required=True, metavar="NAME=DIR", help="dataset folders")
    p.add_argument("--work", required=True, help="folder for the embedding caches (one per model and dataset)")
    p.add_argument("--split", default="test")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", help="markdown table to write (also printed)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from study.domain_table import domain_table, format_table

    cells = domain_table(_pairs(args.image_models, "image model"), _pairs(args.datasets, "dataset"), args.work,
                         split=args.split, resamples=args.resamples, seed=args.seed, workers=args.workers)
    table = format_table(cells)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0
