"""`rad3d logit-curve`: V-3 − V-2 against the macro AUROC of V-3's logits (synthetic levels + the real classifier)."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "logit-curve",
        help="how good must the classifier be for V-3's logits to help? V-3 on logits of set AUROCs vs V-2",
        description="Trains V-3 on synthetic logits made from the labels (a*(2y-1) + N(0,1), a set per target "
        "macro AUROC), V-3 on the image model's own logits and V-2 once, by one connector recipe on the same cache; "
        "evaluates each (finding F1, GREEN-style, 95% bootstrap intervals) and compares each V-3 with V-2 on the "
        "same cases. Writes STUDY/results.csv, results.md, logit_curve.html (+ .png) and progress.json (STUDY: --out, by "
        "default $RAD3D_HOME/logit-curve, which the app's Research tab shows); a rerun "
        "skips finished runs and evaluations and resumes an interrupted one. Example: rad3d logit-curve --data DATA "
        "--cache CACHE --image-model IMAGE --decoder DECODER --levels 0.6 0.7 0.8 0.9 0.95 1.0",
    )
    from training.configs import LogitCurveConfig

    add_data_arguments(p)
    add_config_arguments(p, LogitCurveConfig)
    p.add_argument("--time-limit", type=float, metavar="MIN",
                   help="stop training at a checkpoint after MIN minutes (a rerun continues): a long CPU run in parts")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from engine.data import source_from_args
    from study.logit_curve import curve_markdown
    from training.configs import LogitCurveConfig
    from training.logit_curve import run_logit_curve

    config = config_from_args(LogitCurveConfig, args, data=source_from_args(args))
    limit = None if args.time_limit is None else args.time_limit * 60
    table = run_logit_curve(config, progress=not args.no_progress, time_limit_s=limit)
    if table is not None:
        print(curve_markdown(table))
    return 0
