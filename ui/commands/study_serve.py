"""`rad3d study serve`: the reader-study screens in the browser. The action belongs to `rad3d study`
(study/commands/study.py) but lives here because it starts the UI: study never imports ui."""

from __future__ import annotations

import argparse

from engine.data.source import add_data_arguments
from study.commands.study import add_study_arguments, database_errors, study_actions


def register(subparsers) -> None:
    v = study_actions(subparsers).add_parser("serve", help="serve the reader-study screens in the browser")
    add_study_arguments(v)
    add_data_arguments(v, required=False, help="dataset folder for the viewer (default: the one given at create)")
    v.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=7861)
    v.add_argument("--concurrency", type=int, default=8, help="requests handled at once (default 8)")
    v.add_argument("--session-hours", type=float, default=12.0,
                   help="a login expires after this many hours (default 12)")
    v.set_defaults(handler=serve)


def _check_port(host: str, port: int) -> None:
    """Refuse a port another process holds, before anything is built (Gradio's own error is a traceback)."""
    import socket

    from engine.errors import ConfigError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot serve on {host}:{port} ({err.strerror or err}); "
                          "is another server running? choose another --port") from None


@database_errors
def serve(args: argparse.Namespace) -> int:

    from engine.data import source_from_args
    from engine.errors import ConfigError
    from study.readers.service import ServiceConfig
    from ui.reader_study import ReaderStudyAppConfig, build_reader_study_app

    if args.session_hours <= 0:
        raise ConfigError(f"--session-hours must be positive, got {args.session_hours}")
    _check_port(args.host, args.port)
    config = ReaderStudyAppConfig(db_path=args.db, study=args.name, data_dir=source_from_args(args),
                                  service=ServiceConfig(session_ttl_s=args.session_hours * 3600.0))
    app = build_reader_study_app(config)
    app.queue(default_concurrency_limit=args.concurrency)
    print(f"rad3d study serve: study {args.name!r} on http://{args.host}:{args.port}", flush=True)
    try:
        app.launch(server_name=args.host, server_port=args.port, share=False, show_error=True, quiet=True)
    except OSError as err:  # the port was taken between the check and the launch
        raise ConfigError(f"cannot serve on {args.host}:{args.port} ({str(err).splitlines()[0]})") from None
    return 0
