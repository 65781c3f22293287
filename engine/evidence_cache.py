"""Evidence maps computed once per case: `evidence_for` returns a finding's map on the volume's grid
and its peak, reading it from a cache folder when the same volume, image model and method made
it before.

Layout: ROOT/<volume fingerprint>-<image model digest>/<method>/<finding>.npz with the input-grid
map (float16: a display and a peak need no more) and its logit. Each file is written under a
temporary name and renamed, so a file that exists is whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.evidence import DEFAULT_METHOD, EvidenceMap, evidence_maps, peak_voxel, to_volume_grid


@dataclass
class Overlay:
    """What a viewer lays over a case: the map on the volume's (X, Y, Z) grid in [0, 1] (peak 1), its
    peak voxel."""

    finding: str
    method: str
    volume_map: np.ndarray
    peak: tuple[int, int, int]
    logit: float


def volume_fingerprint(volume) -> str:
    digest = hashlib.sha256()
    digest.update(repr((tuple(volume.hu.shape), str(volume.hu.dtype), tuple(map(float, volume.spacing_mm)))).encode())
    digest.update(np.ascontiguousarray(volume.hu).tobytes())
    return digest.hexdigest()[:16]


def image_model_digest(model) -> str:
    """The weights' and preprocessing's identity (weights files' sha256 when the model came from files)."""
    from engine.provenance import file_sha256

    digest = hashlib.sha256(json.dumps(model.preprocess_config.to_dict(), sort_keys=True).encode())
    spec = getattr(model, "spec", None)
    files = [getattr(getattr(spec, part, None), "weights", None) for part in ("encoder", "classifier")]
    if spec is not None and all(f and Path(f).is_file() for f in files):
        for f in files:
            digest.update(file_sha256(Path(f)).encode())
    else:  # a model built in memory: its parameters are its identity
        for t in model.state_dict().values():
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class EvidenceCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.computed = 0  # maps computed (not read) by this object: what tests and progress read

    def _path(self, key: str, method: str, finding: str) -> Path:
        return self.root / key / method / f"{_slug(finding)}.npz"

    def _read(self, path: Path, finding: str, method: str) -> EvidenceMap | None:
        if not path.is_file():
            return None
        with np.load(path) as z:
            return EvidenceMap(finding, method, z["input_map"].astype(np.float32), float(z["logit"]))

    def _write(self, path: Path, m: EvidenceMap) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npz")
        np.savez(tmp, input_map=m.input_map.astype(np.float16), logit=np.float32(m.logit))
        os.replace(tmp, path)

    def maps(self, model, volume, findings, method: str = DEFAULT_METHOD, x=None) -> list[EvidenceMap]:
        """Input-grid maps of `findings`, computing (in one pass) only those not cached."""
        key = f"{volume_fingerprint(volume)}-{image_model_digest(model)}"
        found = {f: self._read(self._path(key, method, f), f, method) for f in findings}
        missing = [f for f, m in found.items() if m is None]
        if missing:
            x = model.preprocess(volume) if x is None else x
            for m in evidence_maps(model, x, missing, method):
                self._write(self._path(key, method, m.finding), m)
                found[m.finding] = m
                self.computed += 1
        return [found[f] for f in findings]


def overlay_of(m: EvidenceMap, volume, model) -> Overlay:
    vm = to_volume_grid(m.input_map, volume.hu.shape, volume.spacing_mm, model.preprocess_config)
    peak = float(vm.max())
    if peak > 0:  # interpolation between input voxels lowers the top: the overlay's scale starts at 1 again
        vm /= peak
    return Overlay(m.finding, m.method, vm, peak_voxel(vm), m.logit)


def evidence_for(model, volume, finding: str, cache: EvidenceCache | None = None,
                 method: str = DEFAULT_METHOD) -> Overlay:
    """The overlay volume and peak voxel of one finding for one case (cached when `cache` is given):
    the one function both viewers call."""
    if cache is None:
        (m,) = evidence_maps(model, model.preprocess(volume), [finding], method)
    else:
        (m,) = cache.maps(model, volume, [finding], method)
    return overlay_of(m, volume, model)
