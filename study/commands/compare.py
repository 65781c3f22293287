"""`rad3d compare EVAL_A EVAL_B`: paired bootstrap of every metric's difference B − A."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="paired bootstrap comparison of two evaluations of the same cases (difference, 95%% CI, p-value)",
        description="Reads two folders written by `rad3d metrics` on the same cases and label set and prints, for "
        "every metric, B − A with a 95%% paired-bootstrap interval and a two-sided p-value. With --out it writes "
        "comparison.json and comparison.md. Example: rad3d compare runs/v2/eval runs/v3/eval --out runs/v2-vs-v3",
    )
    parser.add_argument("eval_a", metavar="EVAL_A", help="evaluation folder A (the reference run)")
    parser.add_argument("eval_b", metavar="EVAL_B", help="evaluation folder B")
    parser.add_argument("--out", metavar="DIR", help="write comparison.json and comparison.md here")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from study.metrics.paired import compare_evaluations
    from study.report_card import comparison_markdown, write_comparison

    comparison = compare_evaluations(args.eval_a, args.eval_b, args.resamples, args.seed, progress=True)
    print(comparison_markdown(comparison), end="")
    if args.out:
        write_comparison(comparison, args.out)
        print(f"wrote {args.out}/comparison.json, comparison.md")
    return 0
