"""`rad3d demo build`: make (or continue making) the embedded demo model."""

from __future__ import annotations

import argparse


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
    v.set_defaults(handler=run_evaluate)
    e = sub.add_parser("export", help="copy a finished from-scratch build into the shipped form (bf16 + manifest)")
    e.add_argument("--home", help="the demo home built with --from-scratch (default $RAD3D_HOME)")
    e.add_argument("--out", help="destination (default: the repository's training/demo/weights)")
    e.set_defaults(handler=run_export)


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

    out = evaluate_demo(DemoPaths(Path(args.home) if args.home else rad3d_home()), DemoRecipe().variants,
                        progress=not args.no_progress)
    print(f"demo evaluation written to {out} (comparison.json, comparison.md; one folder per run)")
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
