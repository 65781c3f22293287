"""The embedded default the app opens with nothing downloaded: synthetic phantoms (and the demo
runs once `rad3d demo build` has made them)."""

from __future__ import annotations

from pathlib import Path

from ui.home import demo_data_dir, rad3d_home

DEMO_CASES = 24
DEMO_SCALE = 4.0
DEMO_SEED = 0


def ensure_demo_data() -> Path:
    """The demo phantom dataset, generated on first start (a few seconds, progress in the terminal)."""
    out = demo_data_dir()
    if (out / "reports.csv").is_file():
        return out
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    print(f"rad3d app: first start, writing {DEMO_CASES} synthetic chest CT phantoms to {out}")
    tmp = out.with_name(out.name + ".partial")
    write_dataset(SynthConfig(n=DEMO_CASES, seed=DEMO_SEED, scale=DEMO_SCALE), tmp, force=True, progress=True)
    tmp.rename(out)
    return out


def demo_runs() -> dict[str, Path]:
    runs_dir = rad3d_home() / "demo" / "runs"
    return {p.name: p for p in sorted(runs_dir.glob("*")) if (p / "config.json").is_file()}
