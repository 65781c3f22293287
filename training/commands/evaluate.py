"""`rad3d evaluate`: generate a run's reports for a split from the embedding cache and score them."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments


def register(subparsers) -> None:
    from study.metrics.text import CONVENTIONS, DEFAULT_CONVENTION

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
    p.add_argument("--run", required=True, help="run directory (rad3d train)")
    add_data_arguments(p)
    p.add_argument("--cache", required=True, help="embedding cache of that dataset")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--out", required=True, help="evaluation folder to write")
    p.add_argument("--batch-size", type=int, default=16, help="cases generated together (default 16)")
    p.add_argument("--max-new-tokens", type=int, help="report length cap (default: the run's setting)")
    p.add_argument("--beams", type=int, default=1, help="beam search width (default 1: greedy)")
    p.add_argument("--limit", type=int, help="only the first N cases of the split")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--bertscore-model", help="local encoder folder for BERTScore (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--convention", choices=sorted(CONVENTIONS), default=DEFAULT_CONVENTION,
                   help="text convention of BLEU, METEOR, ROUGE-L and CIDEr-D: r2gen (R2Gen's clean_report_mimic_cxr, "
                   "as published CT-RATE numbers; default), coco (PTB tokenizer), raw")
    p.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--format", choices=["rad3d", "vlm3d"], default="rad3d",
                   help="vlm3d: also write the VLM3D challenge's submission and ground-truth JSON and their scores "
                   "(vlm3d_submission.json, vlm3d_ground_truth.json, vlm3d_metrics.json) beside the normal outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.data import source_from_args
    from engine.shards import Shard
    from training.evaluate import EvaluateConfig, evaluate_run

    config = EvaluateConfig(
        run=args.run, data=source_from_args(args), cache=args.cache, out=args.out, split=args.split, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, beams=args.beams, limit=args.limit, device=args.device,
        bertscore_model=args.bertscore_model, bertscore=not args.no_bertscore, meteor=not args.no_meteor,
        resamples=args.resamples, seed=args.seed, output_format=args.format, convention=args.convention,
    )
    predictions, result = evaluate_run(config, progress=not args.no_progress, shard=Shard.launched(config.device))
    if predictions is None:  # another process's shard: the main process reports
        return 0
    print((Path(args.out) / "metrics.md").read_text())
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
