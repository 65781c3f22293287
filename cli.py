"""`rad3d`: the one command-line entry point. Each part of the project offers its own subcommands
in a module with `register(subparsers)`; heavy imports (torch, transformers) happen inside the
handlers so that `rad3d --help` stays instant."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands, in the order `rad3d --help` lists them.
COMMAND_MODULES = [
    "engine.commands.synth",
    "engine.commands.vqa",
    "engine.commands.scan",
    "engine.commands.params",
    "engine.commands.embed",
    "engine.commands.report",
    "engine.commands.ask",
    "engine.commands.evidence",
    "training.commands.demo",
    "ui.commands.app",
    "study.commands.metrics",
    "study.commands.compare",
    "study.commands.study",
    "ui.commands.study_serve",  # adds `serve` to `rad3d study` (the UI starts it; study never imports ui)
    "study.commands.umap",
    "study.commands.labels",
    "study.commands.domain_table",
    "training.commands.train",
    "training.commands.train_classifier",
    "training.commands.train_encoder",
    "training.commands.train_multimodal",
    "training.commands.evaluate",
    "training.commands.consistency",
    "training.commands.domain_guard",
    "training.commands.sweep",
    "training.commands.logit_curve",
    "training.commands.finding_visibility",
]


def wiring() -> dict[str, dict]:
    """What a part's `register` receives besides the subparsers: one part's work handed to another
    that may not import it (ARCHITECTURE.md, "Parts and what each may import")."""
    from study.consistency import ReportConsistency
    from training.demo.first_start import (
        build_default_demo,
        demo_evaluation,
        demo_runs,
        demo_variants,
        ensure_demo_data,
    )
    from ui.demo import Demo

    demo = Demo(data=ensure_demo_data, runs=demo_runs, variants=demo_variants(), build=build_default_demo,
                evaluation=demo_evaluation)
    return {"ui.commands.app": {"demo": demo},  # the app opens training's demo
            "engine.commands.report": {"consistency": ReportConsistency}}  # the draft checked against its classifier


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rad3d",
        description="Draft radiology reports from 3D chest CT (RAD3D-Prefix) and tools to judge them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    given = wiring()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, **given.get(name, {}))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from engine.errors import Rad3dError

    try:
        result = args.handler(args)
    except Rad3dError as err:
        print(f"rad3d {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rad3d {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
