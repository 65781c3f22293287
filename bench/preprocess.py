"""Preprocessing throughput and peak memory: rad3d's `preprocess` against scipy.ndimage.zoom(order=1)
doing the same job (clip, trilinear resample to 0.75 × 0.75 × 1.5 mm, scale, crop/pad to
480 × 480 × 240) on the same synthetic 512 × 512 × 300 int16 CT at 0.7 × 0.7 × 1.25 mm.

Each method runs in its own subprocess so its peak resident memory (ru_maxrss) is its own.
Target: rad3d ≥ 2× the reference's volumes/s, and under 3 GB peak on a 512 × 512 × 600 input
(measured on float32 input at 0.6 mm slices, so that no slice is cropped away before resampling).

    python3 bench/preprocess.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACING = (0.7, 0.7, 1.25)


def synthetic_ct(shape) -> np.ndarray:
    """int16 HU: air, a soft-tissue ellipse with darker lungs and noise (content barely matters for speed)."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    plane = np.where((x / 0.9) ** 2 + (y / 0.7) ** 2 < 1, 40, -1000).astype(np.int16)
    plane[((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1] = -850
    vol = np.repeat(plane[:, :, None], shape[2], axis=2)
    vol += rng.integers(-20, 21, size=shape, dtype=np.int16)
    return vol


def run_rad3d(hu, config, spacing=SPACING):
    from engine.preprocess import preprocess_array

    return preprocess_array(hu, spacing, config)


def run_scipy(hu, config, spacing=SPACING):
    """The same pipeline with scipy.ndimage.zoom(order=1) as the resampler (grid_mode=True matches
    align_corners=False sample positions)."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    from engine.preprocess import crop_or_pad_window, resampled_size

    lo, hi = config.hu_range
    sizes = [resampled_size(n, s, t) for n, s, t in zip(hu.shape, spacing, config.spacing_mm)]
    x = np.clip(hu.astype(np.float32), lo, hi)
    x = ndimage.zoom(x, [m / n for m, n in zip(sizes, hu.shape)], order=1, grid_mode=True, mode="nearest")
    x /= (hi - lo) / 2
    windows = [crop_or_pad_window(m, t) for m, t in zip(x.shape, config.shape_xyz)]
    x = torch.from_numpy(np.ascontiguousarray(x[tuple(slice(w[0], w[1]) for w in windows)]))
    (_, _, xb, xa), (_, _, yb, ya), (_, _, zb, za) = windows
    x = F.pad(x, (zb, za, yb, ya, xb, xa), value=-1.0)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def child(method: str, slices: int, repeats: int, z_spacing: float, float32: bool) -> None:
    import torch

    from engine.preprocess import PreprocessConfig

    config = PreprocessConfig()
    spacing = (SPACING[0], SPACING[1], z_spacing)
    hu = synthetic_ct((512, 512, slices))
    if float32:
        hu = hu.astype(np.float32)  # what the readers hand over
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = {"rad3d": run_rad3d, "scipy": run_scipy}[method]
    out = fn(hu, config, spacing)  # warm-up: first-touch page faults, lazy imports
    assert tuple(out.shape) == (1, 240, 480, 480), out.shape
    del out
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(hu, config, spacing)
        times.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "method": method, "slices": slices, "best_s": min(times), "median_s": float(np.median(times)),
        "peak_rss_gb": peak / 2**20, "input_rss_gb": base_rss / 2**20, "threads": torch.get_num_threads(),
    }))


def measure(method: str, slices: int, repeats: int, z_spacing: float = SPACING[2], float32: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--slices", str(slices), "--repeats", str(repeats),
           "--z-spacing", str(z_spacing)] + (["--float32"] if float32 else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=["rad3d", "scipy"], help=argparse.SUPPRESS)
    parser.add_argument("--slices", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--z-spacing", type=float, default=SPACING[2], help=argparse.SUPPRESS)
    parser.add_argument("--float32", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.slices, args.repeats, args.z_spacing, args.float32)
        return

    import os

    import scipy
    import torch

    print(f"device: {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"input 512×512×300 int16 at {SPACING} mm → (1, 240, 480, 480) float32; "
          f"best of {args.repeats} after a warm-up")
    rows = {m: measure(m, 300, args.repeats) for m in ("rad3d", "scipy")}
    for m, r in rows.items():
        print(f"  {m:<6} {1 / r['best_s']:6.3f} volumes/s  ({r['best_s']:.2f} s best, {r['median_s']:.2f} s median)  "
              f"peak RSS {r['peak_rss_gb']:.2f} GB (input alone {r['input_rss_gb']:.2f} GB)")
    ratio = rows["scipy"]["best_s"] / rows["rad3d"]["best_s"]
    verdict = "PASS" if ratio >= 2 else "FAIL"
    print(f"  speed ratio rad3d / scipy.ndimage.zoom: {ratio:.2f}× (target ≥ 2×): {verdict}")
    # Worst case for memory: float32 input (as the readers give it) whose every slice survives the crop.
    big = measure("rad3d", 600, 1, z_spacing=0.6, float32=True)
    print(f"input 512×512×600 float32 at 0.7×0.7×0.6 mm: rad3d peak RSS {big['peak_rss_gb']:.2f} GB "
          f"(input alone {big['input_rss_gb']:.2f} GB; target < 3 GB): "
          f"{'PASS' if big['peak_rss_gb'] < 3 else 'FAIL'}  ({big['best_s']:.2f} s)")


if __name__ == "__main__":
    main()
