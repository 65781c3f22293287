"""What the app's first start needs of the demo: its dataset (the demo build's phantoms once `rad3d
demo build` made them, else a preview written in seconds: the first PREVIEW_CASES of the demo
recipe's held-out test split, the very volumes the build writes, so that the cases a newcomer opens
are never ones the demo runs learned from), its finished runs with the method (V-3) first, and the
build itself. The CLI hands these to the UI (ui.demo.Demo), which never imports training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.home import rad3d_home
from training.demo.build import DemoPaths, DemoRecipe, build_demo

PREVIEW_CASES = 24  # of the test split's 186: seconds to write on first start (the build writes all)


def preview_folder(home: Path) -> Path:
    return Path(home) / "preview" / "test-phantoms"


def ensure_demo_data() -> Path:
    """The demo dataset when built, else the preview phantoms (written on first start, progress in
    the terminal)."""
    paths = DemoPaths(rad3d_home())
    if (paths.data / "reports.csv").is_file():
        return paths.data
    return ensure_preview(rad3d_home())


def ensure_preview(home: Path, recipe: DemoRecipe | None = None, cases: int | None = None) -> Path:
    """The first `cases` (default PREVIEW_CASES) phantoms of `recipe`'s test split under `home`
    (written once; a half-written preview is redone)."""
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    recipe = recipe or DemoRecipe()
    folder = preview_folder(home)
    if (folder / "reports.csv").is_file():
        return folder
    n = PREVIEW_CASES if cases is None else cases
    print(f"rad3d app: first start, writing {n} held-out test phantoms of the demo to {folder}")
    partial = folder.with_name(folder.name + ".partial")
    write_dataset(SynthConfig(n=recipe.cases, seed=recipe.seed, scale=recipe.scale, workers=2), partial,
                  force=True, progress=True, only_splits=("test",), limit=n)
    partial.rename(folder)
    return folder


def demo_runs() -> dict[str, Path]:
    """The finished demo runs, in the recipe's order (the method, V-3, first), then any others."""
    runs_dir = DemoPaths(rad3d_home()).root / "runs"
    found = {p.name: p for p in sorted(runs_dir.glob("*")) if (p / "config.json").is_file()}
    order = [v for v in demo_variants() if v in found] + [n for n in found if n not in demo_variants()]
    return {n: found[n] for n in order}


def demo_variants() -> tuple[str, ...]:
    """The runs a complete demo build gives, the method first."""
    return tuple(DemoRecipe().variants)


def demo_evaluation() -> Path:
    """Where the demo's own evaluation lives (training.demo.evaluation writes it)."""
    return DemoPaths(rad3d_home()).evaluation


def build_default_demo(say: Callable[[str], None]) -> dict[str, Path]:
    """`rad3d demo build` with the default recipe under $RAD3D_HOME."""
    return build_demo(rad3d_home(), say=say)
