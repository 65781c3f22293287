"""`rad3d` subcommands offered by study/: metrics and compare."""
