"""Paths built from names a browser sends: they must stay inside the folder they name into.

The app reads only its data folder, its run folders and its upload area; every name that comes
from a client (an uploaded file's name, a case key) goes through `child_path` or `safe_file_name`.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import VolumeError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, max_len: int = 120) -> str:
    """A client's file name reduced to its last component with only [A-Za-z0-9._-]; never empty,
    never '.', '..' or hidden. Keeps compound suffixes such as '.nii.gz'."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")
    base = base[-max_len:] if len(base) > max_len else base
    return base or "upload"


def child_path(root: str | Path, name: str) -> Path:
    """root/name, refused (VolumeError) unless it resolves strictly inside root."""
    root = Path(root).resolve()
    candidate = (root / name).resolve()
    if candidate == root or root not in candidate.parents:
        raise VolumeError(f"refused: {name!r} points outside the app's folders")
    return candidate
