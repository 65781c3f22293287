"""`rad3d umap`: UMAP of the prefix embeddings of several runs, side by side, as interactive HTML."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("umap", help="UMAP (2-D and 3-D) of runs' prefix embeddings, coloured by a finding",
                              description="Project each run's prefixes of a split's cases with umap-learn (seeded) "
                                          "and write plotly figures side by side to one HTML file.")
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN", help="run directories, e.g. v2=RUN_A v3=RUN_B")
    add_data_arguments(p, help="dataset folder (flat layout or CT-RATE's released tree, with labels)")
    p.add_argument("--cache", required=True, help="embedding cache with the split's latents (and logits)")
    p.add_argument("--split", default="test", help="split to project (default test)")
    p.add_argument("--finding", help="finding to colour by (default: the split's most frequent)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output .html")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.data import source_from_args
    from engine.errors import ConfigError
    from study.umap_plot import run_umap

    runs = {}
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if name in runs:
            raise ConfigError(f"run name {name!r} given twice")
        runs[name] = path
    fig, projections, names = run_umap(runs, source_from_args(args), args.cache, args.split, args.finding, args.seed, args.device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(args.out, include_plotlyjs=True)
    print(f"UMAP of {len(names)} {args.split} cases for {', '.join(runs)} written to {args.out}")
    return 0
