"""The embedded default the app opens with nothing downloaded, as the app sees it. The demo itself
(phantoms, runs, the build) is made by training.demo; the CLI hands it in as a `Demo` so that the
UI never imports training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ui.demo_builder import BuildFn


@dataclass(frozen=True)
class Demo:
    data: Callable[[], Path]  # the demo dataset, written on first start if missing
    runs: Callable[[], dict[str, Path]]  # the finished demo runs by name
    variants: tuple[str, ...]  # the run names a complete build gives
    build: BuildFn  # build (or continue building) the demo, saying each step
    evaluation: Callable[[], Path] | None = None  # the folder of its V-3 vs V-2 evaluation (Research tab)

    def missing_runs(self, runs: dict[str, Path]) -> list[str]:
        """The variants that have no finished run in `runs` (empty: the demo is complete)."""
        return [v for v in self.variants if v not in runs]
