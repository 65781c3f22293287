"""`rad3d evaluate`: generate a run's reports for a split from the embedding cache and score them."""

from __future__ import annotations

import argparse

from engine.config import add_config_arguments, config_from_args
from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="generate a run's reports for a split (from the cache) and compute the report metrics",
        description="Generates each case's findings from its cached latent (and logits) in batches, greedy "
        "unless --beams > 1, writes EVAL/predictions.csv and scores it (BLEU, METEOR, ROUGE, BERTScore, "
        "finding precision/recall/F1, GREEN-style, each with a 95%% bootstrap interval) into "
        "EVAL/metrics.json, metrics.md and per_case.csv. Example: "
        "rad3d evaluate --run RUN --data DATA --cache CACHE --split test --out EVAL. Under `accelerate launch` "
        "each process generates its shard of the cases; finished batches are kept in EVAL/shards, so a rerun resumes.",
    )
    from training.configs import EvaluateConfig

    add_config_arguments(p, EvaluateConfig)  # every setting, with its default, from EvaluateConfig
    from study.consistency import ConsistencyConfig

    add_config_arguments(p, ConsistencyConfig, prefix="consistency_")
    add_data_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.data import source_from_args
    from engine.shards import Shard
    from study.consistency import ConsistencyConfig
    from training.configs import EvaluateConfig
    from training.evaluate import evaluate_run

    consistency = config_from_args(ConsistencyConfig, args, prefix="consistency_")
    config = config_from_args(EvaluateConfig, args, data=source_from_args(args), consistency=consistency)
    predictions, result = evaluate_run(config, progress=not args.no_progress, shard=Shard.launched(config.device))
    if predictions is None:  # another process's shard: the main process reports
        return 0
    if (Path(args.out) / "vqa_metrics.md").is_file() and not (Path(args.out) / "metrics.md").is_file():
        return _print_vqa(config, predictions)
    print((Path(args.out) / "metrics.md").read_text())
    if (Path(args.out) / "consistency.md").is_file():
        print((Path(args.out) / "consistency.md").read_text())
    if "vlm3d" in result.info:
        from study.metrics.vlm3d import format_document

        print(format_document(result.info["vlm3d"]))
    guard = result.info.get("domain_guard")
    if guard:
        c = guard["calibration"] or {}
        print(f"Domain guard: threshold {guard['threshold']:.2f} (Mahalanobis distance to the training latents; "
              f"false-positive rate on {c.get('split', '?')} {c.get('false_positive_rate', float('nan')):.1%} of "
              f"{c.get('cases', '?')} cases); flagged outside the domain here: {guard['flagged']} of {guard['cases']}")
    else:
        print("Domain guard: none in this run (made before guards; `rad3d domain-guard` adds one)")
    print(f"{len(predictions)} cases -> {args.out}")
    return 0


def _print_vqa(config, predictions) -> int:
    from pathlib import Path

    import pandas as pd

    from training.multimodal_evaluate import side_by_side

    out = Path(config.out)
    print((out / "vqa_metrics.md").read_text())
    if config.baseline:
        tables = {out.name: pd.read_csv(out / "vqa_metrics.csv"),
                  Path(config.baseline).name: _baseline_table(Path(config.baseline))}
        print(side_by_side(tables))
    print(f"{len(predictions)} items -> {config.out}")
    return 0


def _baseline_table(folder):
    import pandas as pd

    from engine.errors import ConfigError

    path = folder / "vqa_metrics.csv"
    if not path.is_file():
        raise ConfigError("no vqa_metrics.csv (evaluate the baseline run with --task vqa first)", folder)
    return pd.read_csv(path)
