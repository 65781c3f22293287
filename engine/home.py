"""Where rad3d keeps what it builds for the user (the embedded demo, uploads): $RAD3D_HOME, else
~/.cache/rad3d."""

from __future__ import annotations

import os
from pathlib import Path


def rad3d_home() -> Path:
    return Path(os.environ.get("RAD3D_HOME") or Path.home() / ".cache" / "rad3d").expanduser()
