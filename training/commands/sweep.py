"""`rad3d sweep`: train and evaluate a grid of LLMs × variants × prefix lengths × mapper layers."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train + evaluate a grid (LLMs x variants x prefix lengths x layers) into one results table",
        description="Each grid point is a `rad3d train` and a `rad3d evaluate` under SWEEP/runs and SWEEP/evals; "
        "a rerun skips finished points and resumes an interrupted one. Writes SWEEP/results.csv and results.md "
        "with trainable parameter counts, best validation loss and the headline metrics. Example: "
        "rad3d sweep --data DATA --cache CACHE --image-model IMAGE --llms smollm2=LLM_DIR --variants v2 v3 "
        "--prefix-lens 2 5 7 10 14 --layers 8 --out SWEEP",
    )
    add_data_arguments(p)
    p.add_argument("--cache", required=True, help="embedding cache of that dataset")
    p.add_argument("--image-model", required=True, help="IMAGE folder with encoder, classifier, label set")
    p.add_argument("--llms", nargs="+", required=True, metavar="NAME=PATH", help="LLMs to sweep, each NAME=local folder")
    p.add_argument("--variants", nargs="+", default=["v3"], help="variants (default v3)")
    p.add_argument("--prefix-lens", nargs="+", type=int, default=[10], help="prefix lengths (default 10)")
    p.add_argument("--layers", nargs="+", type=int, default=[8], help="mapper layers (default 8)")
    p.add_argument("--clip-len", type=int, help="projection tokens (default: each point's prefix length)")
    p.add_argument("--out", required=True, help="sweep folder")
    p.add_argument("--epochs", type=int, default=10, help="epochs per point (default 10)")
    p.add_argument("--max-steps", type=int, help="cap on steps per point")
    p.add_argument("--lr", type=float, default=2e-5, help="learning rate (default 2e-5)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--max-report-tokens", type=int, help="truncate longer findings to N tokens")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--save-every-steps", type=int, help="also checkpoint every N steps")
    p.add_argument("--eval-split", default="valid", help="split to evaluate on (default valid; test for final tables)")
    p.add_argument("--eval-batch-size", type=int, default=16, help="generation batch size (default 16)")
    p.add_argument("--max-new-tokens", type=int, help="report length cap for evaluation")
    p.add_argument("--eval-limit", type=int, help="evaluate only the first N cases")
    p.add_argument("--bertscore-model", help="local encoder folder for BERTScore")
    p.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR")
    p.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.data import source_from_args
    from training.sweep import SweepConfig, parse_llms, run_sweep

    config = SweepConfig(
        data=source_from_args(args), cache=args.cache, image_model=args.image_model, out=args.out, llms=parse_llms(args.llms),
        variants=tuple(args.variants), prefix_lens=tuple(args.prefix_lens), layers=tuple(args.layers),
        clip_len=args.clip_len, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
        batch_size=args.batch_size, max_report_tokens=args.max_report_tokens, seed=args.seed,
        save_every_steps=args.save_every_steps, eval_split=args.eval_split, eval_batch_size=args.eval_batch_size,
        max_new_tokens=args.max_new_tokens, eval_limit=args.eval_limit, bertscore_model=args.bertscore_model,
        bertscore=not args.no_bertscore, meteor=not args.no_meteor, resamples=args.resamples,
    )
    run_sweep(config, progress=not args.no_progress)
    print((Path(args.out) / "results.md").read_text())
    return 0
