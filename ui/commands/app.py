"""`rad3d app`: serve the review app (on loopback unless told otherwise)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="serve the review app in the browser",
        description="Serve the Gradio review app. Without --data it opens the embedded demo dataset "
        "(synthetic chest CT phantoms, built on first start); without --run it uses the demo runs when "
        "they have been built.",
    )
    p.add_argument("--data", help="dataset folder in CT-RATE's format (default: the embedded demo phantoms)")
    p.add_argument("--run", action="append", default=[], metavar="[NAME=]RUN",
                   help="run directory to generate with (repeatable; NAME= sets the shown name)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help=argparse.SUPPRESS)  # never: no tunnels from here
    p.set_defaults(handler=run)


def parse_runs(specs: list[str]) -> dict:
    from pathlib import Path

    runs = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        runs[name or path.name] = path
    return runs


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ui.app import AppConfig, build_app
    from ui.demo import ensure_demo_data, demo_runs

    data = Path(args.data) if args.data else ensure_demo_data()
    runs = parse_runs(args.run) if args.run else demo_runs()
    app = build_app(AppConfig(data_dir=data, runs=runs))
    print(f"rad3d app: {len(runs)} run(s), data {data}; serving on http://{args.host}:{args.port}")
    app.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return 0
