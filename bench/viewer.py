"""Viewer speed on a 480 × 480 × 240 volume (CT-CLIP's grid), server side: the median time to
redraw the three planes after a slice change and after a window change (slice from the cached
array, window, resize, crosshair, letters, PNG encoding as the page receives it), printed with
the device and as a ratio against re-reading the volume from its NIfTI file, the cost the cache
avoids. Target: under 150 ms per slice change.

    python bench/viewer.py [--repeats 30] [--max-side 420]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from engine.io import read_nifti
from engine.volume import Volume
from ui.plane_image import encode_png
from ui.viewer import WINDOW_PRESETS, Crosshair, render_views
from ui.volumes import VolumeStore

SHAPE = (480, 480, 240)
SPACING = (0.75, 0.75, 1.5)


def device_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} (CPU)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} (CPU)"


def chest_volume() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE), indexing="ij", sparse=True)
    hu = np.full(SHAPE, -1000.0, dtype=np.float32)
    hu[np.broadcast_to((x / 0.9) ** 2 + (y / 0.7) ** 2 < 1, SHAPE)] = 40.0
    hu[np.broadcast_to(((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 + (z / 1.1) ** 2 < 1, SHAPE)] = -850.0
    return hu + np.random.default_rng(0).normal(0, 20, SHAPE).astype(np.float32)


def redraw(volume: Volume, cross: Crosshair, width: float, level: float, max_side: int) -> None:
    for image in render_views(volume.hu, volume.spacing_mm, cross, width, level, max_side=max_side):
        encode_png(image)  # what the page's PlaneImage does before sending it


def median_ms(fn, repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-side", type=int, default=420)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
        nib.save(nib.Nifti1Image(chest_volume().astype(np.int16), affine), path)
        store = VolumeStore(lambda p: read_nifti(p))
        volume = store.get(str(path))
        width, level = WINDOW_PRESETS["lung"]
        slice_ms = median_ms(lambda i: redraw(store.get(str(path)), Crosshair(240, 240, (7 * i) % 240),
                                              width, level, args.max_side), args.repeats)
        presets = list(WINDOW_PRESETS.values())
        window_ms = median_ms(lambda i: redraw(store.get(str(path)), Crosshair(240, 240, 120),
                                               *presets[i % len(presets)], args.max_side), args.repeats)
        reload_ms = median_ms(lambda i: read_nifti(path), 3)
        assert store.loads == 1, "slicing must never reread the file"

    print(f"device: {device_name()}")
    print(f"volume: {'x'.join(map(str, volume.shape))} voxels, planes drawn at {args.max_side} px, "
          f"median of {args.repeats}")
    print(f"slice change  (3 planes redrawn): {slice_ms:7.1f} ms  (target < 150 ms)")
    print(f"window change (3 planes redrawn): {window_ms:7.1f} ms")
    print(f"reference: re-reading the NIfTI file {reload_ms:7.1f} ms -> cached slicing is "
          f"{reload_ms / slice_ms:.0f}x faster")


if __name__ == "__main__":
    main()
