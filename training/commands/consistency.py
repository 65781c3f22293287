"""`rad3d consistency --eval EVAL --run RUN --data DATA --cache CACHE`: the report-vs-classifier
consistency of an evaluation written before (rad3d evaluate writes it itself)."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "consistency",
        help="count where an evaluation's reports agree with, override or follow their classifier",
        description="For every case of EVAL/predictions.csv: each finding's statement in the generated report beside "
        "the run's classifier (scored from the cached latent) and the reference label; writes EVAL/consistency.csv "
        "(per finding: agreement, report follows a wrong classifier, report overrides classifier correctly / "
        "incorrectly, the flags, finding F1 with and without the guarded marks), consistency_cases.csv, .md, .json.",
    )
    p.add_argument("--eval", required=True, help="evaluation folder (rad3d evaluate --out)")
    p.add_argument("--run", required=True, help="the run that wrote the predictions")
    p.add_argument("--cache", required=True, help="embedding cache of the dataset")
    p.add_argument("--out", default=None, help="folder to write (default: the evaluation folder)")
    from study.consistency import ConsistencyConfig

    add_config_arguments(p, ConsistencyConfig, exclude=("guarded",), prefix="consistency_")
    add_data_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from study.consistency import ConsistencyConfig, table_markdown
    from training.consistency import consistency_of_folder

    config = config_from_args(ConsistencyConfig, args, exclude=("guarded",), prefix="consistency_")
    table = consistency_of_folder(args.eval, args.run, source_from_args(args), args.cache, config, out=args.out)
    print(table_markdown(table))
    return 0
