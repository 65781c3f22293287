"""The app's `rad3d` subcommands."""
