"""The evidence maps' measured check on phantoms: for every planted finding of a case, does the
map's peak voxel fall inside the planted object (engine.synth.masks)? Hit rate per finding and
method over a split; the one number that chooses engine.evidence.DEFAULT_METHOD.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import DatasetError

TRUTH_FILE = "phantom_truth.json"


@dataclass
class Hit:
    volume: str
    finding: str
    method: str
    peak: tuple[int, int, int]
    hit: bool
    logit: float
    object_fraction: float  # the object's share of the volume: the hit rate a uniformly random peak would have


def phantom_truth(root: str | Path) -> dict:
    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        raise DatasetError(f"no {TRUTH_FILE}: the evidence check needs phantoms written by `rad3d synth`", root)
    return json.loads(path.read_text())


def check_case(model, volume, truth: dict, scale: float, methods: Sequence[str]) -> list[Hit]:
    """Hits of each method for each finding planted in one phantom (`truth`: its phantom_truth.json entry)."""
    from engine.evidence import evidence_maps, peak_voxel, to_volume_grid
    from engine.synth.masks import finding_masks

    names = [f["finding"] for f in truth["findings"]]
    if not names:
        return []
    patient, scan, recon = truth["seeds"]
    masks = finding_masks(scan, names, scale, patient_seed=patient, recon_seed=recon)
    x = model.preprocess(volume)
    hits = []
    for method in methods:
        for m in evidence_maps(model, x, names, method):
            mask = masks[m.finding]
            if mask.shape != volume.hu.shape:
                raise DatasetError(f"phantom grid {mask.shape} regenerated from its seeds differs from the file's "
                                   f"{volume.hu.shape}", volume.source)
            peak = peak_voxel(to_volume_grid(m.input_map, volume.hu.shape, volume.spacing_mm, model.preprocess_config))
            hits.append(Hit(Path(str(volume.source)).name, m.finding, method, peak, bool(mask[peak]), m.logit,
                            float(mask.mean())))
    return hits


def hit_table(hits: Iterable[Hit], names: Sequence[str], methods: Sequence[str]) -> list[dict]:
    """One row per finding: cases with it planted, and per method the hits and the rate (None: no cases);
    `chance`: the mean object fraction (a random peak's hit rate)."""
    rows = []
    hits = list(hits)
    for name in names:
        row = {"finding": name}
        mine = [h for h in hits if h.finding == name]
        for method in methods:
            got = [h.hit for h in mine if h.method == method]
            row["cases"] = len(got)
            row[method] = sum(got) / len(got) if got else None
        fractions = [h.object_fraction for h in mine if h.method == methods[0]]
        row["chance"] = sum(fractions) / len(fractions) if fractions else None
        rows.append(row)
    return rows


def save_hits(path: Path, hits: Iterable[Hit]) -> None:
    with path.open("a") as f:
        for h in hits:
            f.write(json.dumps(asdict(h)) + "\n")


def load_hits(path: Path) -> list[Hit]:
    if not path.is_file():
        return []
    return [Hit(**{**d, "peak": tuple(d["peak"])}) for d in map(json.loads, path.read_text().splitlines()) if d]
