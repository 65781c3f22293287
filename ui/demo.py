"""The embedded default the app opens with nothing downloaded: the demo phantoms (written on first
start by the demo build's own phantom step) and the demo runs once `rad3d demo build` made them."""

from __future__ import annotations

from pathlib import Path

from engine.home import rad3d_home
from training.demo.build import DemoPaths, DemoRecipe, ensure_phantoms

RECIPE = DemoRecipe()


def ensure_demo_data() -> Path:
    """The demo phantom dataset, generated on first start (progress in the terminal)."""
    paths = DemoPaths(rad3d_home())
    if not (paths.data / "reports.csv").is_file():
        print(f"rad3d app: first start, writing {RECIPE.cases} synthetic chest CT phantoms to {paths.data}")
    return ensure_phantoms(paths, RECIPE)


def demo_runs() -> dict[str, Path]:
    runs_dir = DemoPaths(rad3d_home()).root / "runs"
    return {p.name: p for p in sorted(runs_dir.glob("*")) if (p / "config.json").is_file()}
