"""The embedded default the app opens with nothing downloaded: the demo build's phantoms once
`rad3d demo build` made them (with its runs), else a small preview set written on first start in
seconds (the full demo set is 1200 phantoms, minutes to write)."""

from __future__ import annotations

from pathlib import Path

from engine.home import rad3d_home
from training.demo.build import DemoPaths, DemoRecipe, ensure_phantoms

PREVIEW = DemoRecipe(cases=24)


def ensure_demo_data() -> Path:
    """The demo dataset when built, else the preview phantoms (written on first start, progress in
    the terminal)."""
    paths = DemoPaths(rad3d_home())
    if (paths.data / "reports.csv").is_file():
        return paths.data
    preview = DemoPaths(rad3d_home() / "preview")
    if not (preview.data / "reports.csv").is_file():
        print(f"rad3d app: first start, writing {PREVIEW.cases} synthetic chest CT phantoms to {preview.data}")
    return ensure_phantoms(preview, PREVIEW)


def demo_runs() -> dict[str, Path]:
    runs_dir = DemoPaths(rad3d_home()).root / "runs"
    return {p.name: p for p in sorted(runs_dir.glob("*")) if (p / "config.json").is_file()}
