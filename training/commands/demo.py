"""`rad3d demo build`: make (or continue making) the embedded demo model; `export` and `rethreshold`
rewrite its shipped form."""

from __future__ import annotations

import argparse

from engine.model_configs import DEFAULT_MIN_SPECIFICITY, DEFAULT_THRESHOLD_METHOD, THRESHOLD_METHODS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build the embedded demo model (phantoms, small encoder, V-3 and V-2 connectors on SmolLM2)",
        description="Build the embedded demo under $RAD3D_HOME/demo (default ~/.cache/rad3d/demo) with the "
        "project's own commands. Every step resumes where an earlier call stopped.",
    )
    sub = p.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build or continue building the demo")
    b.add_argument("--home", help="where to build (default $RAD3D_HOME or ~/.cache/rad3d)")
    b.add_argument("--cases", type=int, help="phantoms to write (default from the recipe)")
    b.add_argument("--time-limit", type=float, help="minutes to spend training connectors before stopping cleanly")
    b.add_argument("--from-scratch", action="store_true",
                   help="train the image model and connectors with the project's commands instead of installing the "
                   "shipped weights (about two hours on 2 CPU cores)")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(handler=run)
    v = sub.add_parser("evaluate", help="evaluate the demo runs on the test split and compare V-3 with V-2 "
                       "(eval/; the app's Research tab opens on it)")
    v.add_argument("--home", help="the demo home (default $RAD3D_HOME)")
    v.add_argument("--no-progress", action="store_true")
    v.add_argument("--ship", action="store_true", help="also add the evaluation to the repository's shipped demo "
                   "(training/demo/weights/eval), when the home's weights are the shipped ones")
    v.set_defaults(handler=run_evaluate)
    e = sub.add_parser("export", help="copy a finished from-scratch build into the shipped form (bf16 + manifest)")
    e.add_argument("--home", help="the demo home built with --from-scratch (default $RAD3D_HOME)")
    e.add_argument("--out", help="destination (default: the repository's training/demo/weights)")
    e.set_defaults(handler=run_export)
    t = sub.add_parser("rethreshold", help="choose the shipped image model's thresholds again on the valid split",
                       description="Write the recipe's valid and test phantoms into a scratch demo home, compute "
                       "their probabilities with the shipped image model, choose per-finding thresholds on valid "
                       "and rewrite the shipped configs, classifier report and manifest (installed demo homes are "
                       "brought up to date by the next `rad3d demo build`).")
    t.add_argument("--home", help="scratch home for the phantoms and their embeddings (default "
                   "$RAD3D_HOME/rethreshold; not the demo home itself, whose phantoms are the test split only)")
    t.add_argument("--method", default=DEFAULT_THRESHOLD_METHOD, choices=THRESHOLD_METHODS,
                   help="youden-floor: the best sensitivity + specificity among the thresholds with valid specificity >= "
                   "--min-specificity (engine.classifier.choose_thresholds)")
    t.add_argument("--min-specificity", type=float, default=DEFAULT_MIN_SPECIFICITY)
    t.add_argument("--out", help="the shipped folder to rewrite (default: the repository's training/demo/weights)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(handler=run_rethreshold)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from engine.home import rad3d_home
    from training.demo.build import DemoRecipe, build_demo

    recipe = DemoRecipe()
    if args.cases:
        recipe = dataclasses.replace(recipe, cases=args.cases)
    home = Path(args.home) if args.home else rad3d_home()
    runs = build_demo(home, recipe, time_limit_s=None if args.time_limit is None else 60 * args.time_limit,
                      progress=not args.no_progress, from_scratch=args.from_scratch)
    done = ", ".join(f"{k}: {v}" for k, v in runs.items()) or "none yet"
    print(f"demo runs finished: {done}")
    return 0 if len(runs) == len(recipe.variants) else 3


def run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.home import rad3d_home
    from training.demo.build import DemoPaths, DemoRecipe
    from training.demo.evaluation import evaluate_demo

    paths = DemoPaths(Path(args.home) if args.home else rad3d_home())
    out = evaluate_demo(paths, DemoRecipe().variants, progress=not args.no_progress)
    print(f"demo evaluation written to {out} (comparison.json, comparison.md; one folder per run)")
    if args.ship:
        from training.demo.shipped import SHIPPED_DIR, ship_evaluation

        added = ship_evaluation(paths, DemoRecipe().variants)
        print(f"added to the shipped demo ({SHIPPED_DIR}): {', '.join(added)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.home import rad3d_home
    from training.demo.build import DemoPaths, DemoRecipe
    from training.demo.shipped import SHIPPED_DIR, export_demo

    recipe = DemoRecipe()
    paths = DemoPaths(Path(args.home) if args.home else rad3d_home())
    dest = export_demo(paths, recipe, recipe.variants, Path(args.out) if args.out else SHIPPED_DIR)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"shipped demo weights written to {dest} ({size / 2**20:.1f} MiB)")
    return 0


def run_rethreshold(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.home import rad3d_home
    from training.demo.build import DemoRecipe
    from training.demo.rethreshold import SPLITS, mean_positives, rethreshold, shipped_probabilities
    from training.demo.shipped import SHIPPED_DIR, shipped_for

    folder = Path(args.out) if args.out else SHIPPED_DIR
    recipe = DemoRecipe()
    if shipped_for(recipe, folder) is None:
        from engine.errors import ConfigError

        raise ConfigError("no shipped weights made by the demo recipe here", folder / "manifest.json")
    home = Path(args.home) if args.home else rad3d_home() / "rethreshold"
    split_data, label_set = shipped_probabilities(home, recipe, folder / "image", progress=not args.no_progress)
    table = rethreshold(folder, split_data, label_set, method=args.method, min_specificity=args.min_specificity)
    for split in SPLITS:
        part = table[(table.split == split) & (table.name != "macro")]
        probs, truth = split_data[split][1], split_data[split][2]
        print(f"{split}: {mean_positives(probs, part.threshold.to_numpy()):.2f} findings called positive per case "
              f"(truth {truth.sum(1).mean():.2f}); macro sensitivity {part.sensitivity.mean():.3f}, "
              f"specificity {part.specificity.mean():.3f}")
    print(f"rewrote the thresholds, classifier report and manifest in {folder}")
    return 0
