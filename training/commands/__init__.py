"""`rad3d` subcommands of the training recipes (one module per command, registered in cli.py)."""
