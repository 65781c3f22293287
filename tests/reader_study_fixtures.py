"""Phantom material for the reader-study tests: a small synthetic dataset (engine.synth) and, per
arm, a predictions CSV whose generated texts are the phantom reports perturbed differently
(sentences dropped, repeated or truncated), in the columns `rad3d evaluate` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ARMS = ("baseline", "v2", "v3")


def write_phantom_dataset(root: Path, n: int = 6, seed: int = 0) -> Path:
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    return write_dataset(SynthConfig(n=n, seed=seed, scale=6.0), root, force=True, progress=False)


def perturb(text: str, arm: str, rng: np.random.Generator) -> str:
    sentences = [s.strip() for s in text.split(". ") if s.strip()]
    if arm == "baseline":  # fluent but uninformative: mostly the first, normal-sounding sentences
        return ". ".join(sentences[:3]).rstrip(".") + "."
    if arm == "v2":  # content kept, with a repeated and a truncated sentence
        k = int(rng.integers(len(sentences)))
        out = sentences + [sentences[k]]
        out[-2] = out[-2][: max(5, len(out[-2]) // 2)]
        return ". ".join(out)
    drop = int(rng.integers(len(sentences)))  # v3: one sentence dropped
    return ". ".join(s for i, s in enumerate(sentences) if i != drop or len(sentences) == 1).rstrip(".") + "."


def write_predictions(data: Path, out_dir: Path, arms=ARMS, seed: int = 0) -> dict[str, Path]:
    reports = pd.read_csv(data / "reports.csv")
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for arm in arms:
        rows = [{"VolumeName": r.VolumeName, "reference": r.Findings_EN, "generated": perturb(r.Findings_EN, arm, rng),
                 "run": f"run-{arm}", "variant": arm, "seconds": 1.5, "new_tokens": 120, "finished": True}
                for r in reports.itertuples()]
        paths[arm] = out_dir / f"predictions_{arm}.csv"
        pd.DataFrame(rows).to_csv(paths[arm], index=False)
    return paths
