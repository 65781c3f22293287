"""`rad3d sweep`: train and evaluate a grid of decoders × variants × prefix lengths × connector layers."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args, field_help
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train + evaluate a grid (decoders x variants x prefix lengths x layers) into one results table",
        description="Each grid point is a `rad3d train` and a `rad3d evaluate` under SWEEP/runs and SWEEP/evals; "
        "a rerun skips finished points and resumes an interrupted one. Writes SWEEP/results.csv and results.md "
        "with trainable parameter counts, best validation loss and the headline metrics. Example: "
        "rad3d sweep --data DATA --cache CACHE --image-model IMAGE --decoders smollm2=DECODER_DIR --variants v2 v3 "
        "--prefix-lens 2 5 7 10 14 --layers 8 --out SWEEP",
    )
    from training.configs import SweepConfig

    add_data_arguments(p)
    names = p.add_mutually_exclusive_group(required=True)  # --llms: the older name, hidden
    names.add_argument("--decoders", nargs="+", metavar="NAME=PATH", help=field_help(SweepConfig, "decoders"))
    names.add_argument("--llms", nargs="+", dest="decoders", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    add_config_arguments(p, SweepConfig)  # every other setting, with its default, from SweepConfig
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.data import source_from_args
    from training.sweep import SweepConfig, parse_decoders, run_sweep

    config = config_from_args(SweepConfig, args, data=source_from_args(args), decoders=parse_decoders(args.decoders))
    run_sweep(config, progress=not args.no_progress)
    print((Path(args.out) / "results.md").read_text())
    return 0
