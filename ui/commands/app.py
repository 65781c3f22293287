"""`rad3d app`: serve the review app (on loopback unless told otherwise)."""

from __future__ import annotations

import argparse
import functools

from engine.data.source import add_data_arguments
from ui.demo import Demo


def register(subparsers, *, demo: Demo | None = None) -> None:
    """`demo`: the embedded demo (cli.py hands in training.demo's) opened without --data or --run."""
    p = subparsers.add_parser(
        "app",
        help="serve the review app in the browser",
        description="Serve the Gradio review app. Without --data it opens the embedded demo dataset "
        "(synthetic chest CT phantoms, built on first start); without --run it uses the demo runs, and "
        "builds them in the background on first start (progress in the terminal and in the page).",
    )
    add_data_arguments(p, required=False, help="dataset folder: flat layout or CT-RATE's released tree (default: "
                       "the embedded demo phantoms)")
    p.add_argument("--run", action="append", default=[], metavar="[NAME=]RUN",
                   help="run directory to generate with (repeatable; NAME= sets the shown name)")
    p.add_argument("--eval", dest="eval_dir", metavar="EVAL_DIR",
                   help="evaluation folder (`rad3d metrics` output, or a `rad3d compare --out` folder) shown in the "
                   "Research tab (default on the demo: its own V-3 vs V-2 evaluation)")
    from ui.upload_limits import DEFAULT_MAX_UPLOAD_MB, DEFAULT_RETENTION_HOURS

    p.add_argument("--upload-dir", help="where uploads are kept, one private folder per browser session "
                   "(default: $RAD3D_HOME/uploads)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest accepted upload in MiB (default {DEFAULT_MAX_UPLOAD_MB:g}: a thin-slice chest CT, "
                        "512 x 512 x ~1,000 slices of 2 bytes, is ~500 MiB uncompressed)")
    p.add_argument("--upload-retention-hours", type=float, default=DEFAULT_RETENTION_HOURS,
                   help="uploads are deleted when their browser session ends, or after this many hours "
                        f"(default {DEFAULT_RETENTION_HOURS:g}), with the web server's temporary copies")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the app)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--viewer", choices=("webgl", "png"), default="webgl",
                   help="webgl (default): NiiVue in the browser, the volume sent once and every scroll local, "
                   "falling back to png without WebGL2; png: planes drawn by the server on each change")
    p.add_argument("--no-demo-build", action="store_true",
                   help="without --run, do not build the missing demo model in the background")
    from engine.config import add_config_arguments
    from study.consistency import ConsistencyConfig

    # when the Review tab flags a draft against its classifier (its guarded checkbox is in the page)
    add_config_arguments(p, ConsistencyConfig, exclude=("guarded",), prefix="consistency_")
    p.set_defaults(handler=functools.partial(run, demo=demo))


def parse_runs(specs: list[str]) -> dict:
    from pathlib import Path

    runs = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        path = Path(path)
        runs[name or path.name] = path
    return runs


def start_demo_build(args: argparse.Namespace, runs: dict, demo: Demo | None, make_builder=None):
    """Without --run and with demo runs missing: a started background DemoBuilder (None when
    --run is given, there is no demo, it is complete, or --no-demo-build says not to)."""
    from ui.demo_builder import DemoBuilder, warm_imports

    missing = [] if args.run or demo is None else demo.missing_runs(runs)
    if not missing:
        return None
    if args.no_demo_build:
        print(f"rad3d app: the demo model is not built (missing runs: {', '.join(missing)}); "
              "build it with `rad3d demo build`")
        return None
    print(f"rad3d app: the demo model is not built yet (missing runs: {', '.join(missing)}); building it in "
          "the background, a few minutes, progress here and in the page (--no-demo-build skips this)", flush=True)
    builder = (make_builder or DemoBuilder)(demo.build, expected=demo.variants, prepare=warm_imports)
    builder.start()
    return builder


def app_config(args: argparse.Namespace, demo: Demo | None):
    """The AppConfig the command line asks for (the demo data and runs where none are given)."""
    from pathlib import Path

    from engine.config import config_from_args
    from engine.data import source_from_args
    from engine.errors import ConfigError
    from study.consistency import ConsistencyConfig
    from ui.app import AppConfig

    source = source_from_args(args)
    if demo is None and not (source and args.run):
        raise ConfigError("no embedded demo in this entry point: give --data and --run")
    data = Path(source.root) if source else demo.data()
    runs = parse_runs(args.run) if args.run else demo.runs()
    # On the demo's runs the Research tab opens on the demo's own evaluation unless --eval says otherwise.
    eval_dir = args.eval_dir or (demo.evaluation() if not args.run and demo.evaluation else None)
    return AppConfig(data_dir=data, data_source=source, runs=runs, eval_dir=eval_dir,
                     upload_dir=args.upload_dir, max_upload_mb=args.max_upload_mb,
                     upload_retention_hours=args.upload_retention_hours,
                     consistency=config_from_args(ConsistencyConfig, args, exclude=("guarded",), prefix="consistency_"),
                     viewer=args.viewer)


def run(args: argparse.Namespace, demo: Demo | None = None) -> int:
    from ui.app import build_app, launch

    config = app_config(args, demo)
    builder = start_demo_build(args, config.runs, demo)
    app = build_app(config, demo_builder=builder)
    print(f"rad3d app: {len(config.runs)} run(s), data {config.data_dir}; serving on http://{args.host}:{args.port}")
    launch(app, config, host=args.host, port=args.port)
    return 0
