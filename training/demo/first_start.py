"""What the app's first start needs of the demo: its dataset (the demo build's phantoms once `rad3d
demo build` made them, else a small preview set written in seconds: the full set is 1200 phantoms,
minutes to write), its finished runs, and the build itself. The CLI hands these to the UI
(ui.demo.Demo), which never imports training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.home import rad3d_home
from training.demo.build import DemoPaths, DemoRecipe, build_demo, ensure_phantoms

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


def demo_variants() -> tuple[str, ...]:
    """The runs a complete demo build gives."""
    return tuple(DemoRecipe().variants)


def build_default_demo(say: Callable[[str], None]) -> dict[str, Path]:
    """`rad3d demo build` with the default recipe under $RAD3D_HOME."""
    return build_demo(rad3d_home(), say=say)
