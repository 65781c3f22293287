"""The engine's `rad3d` subcommands, one module each (see cli.py)."""
