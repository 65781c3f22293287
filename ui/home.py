"""Where the app keeps what it builds on first start (the embedded demo data and model)."""

from __future__ import annotations

import os
from pathlib import Path


def rad3d_home() -> Path:
    """$RAD3D_HOME, else ~/.cache/rad3d."""
    return Path(os.environ.get("RAD3D_HOME") or Path.home() / ".cache" / "rad3d").expanduser()


def demo_data_dir() -> Path:
    return rad3d_home() / "demo" / "phantoms"


def demo_run_dir() -> Path:
    return rad3d_home() / "demo" / "runs" / "v3"
