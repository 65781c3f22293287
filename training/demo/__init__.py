"""The embedded demo model: what `rad3d demo build` makes and where it lives."""
