"""CT volume → the encoder's input tensor, exactly as CT-CLIP's inference loader prepares it.

CT-CLIP (scripts/data_inference_nii.py, commit a2a155c): clip HU to [-1000, 1000], trilinear
resample (F.interpolate, align_corners=False) to 0.75 × 0.75 × 1.5 mm with new size
int(n · spacing / target), divide by 1000, centre crop (start max((n - t) // 2, 0)) or pad with -1
(before (t - n) // 2) to 480 × 480 × 240, then permute (X, Y, Z) → (D=Z, H=X, W=Y).

`preprocess` gives the same values (to float32 rounding) with far less time and memory than
resampling the whole volume: trilinear interpolation is separable, so it runs one axis at a time,
and each axis only computes the output voxels that survive the centre crop, from the input voxels
they read, with F.interpolate's own sample positions and weights (computed in float64, as
CT-CLIP's float64 tensors get them). The passes are plane-by-plane numpy updates on a few threads:
cache-friendly, no full-size temporaries. `preprocess_plain` is the literal full-volume path, kept
as the reference the fast one is tested against.

`PreprocessConfig.recipe == "m3d"` selects M3D's preparation instead (`preprocess_m3d`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import VolumeError
from engine.model_configs import PREPROCESS_VERSION, PreprocessConfig  # noqa: F401 (defined without torch)
from engine.volume import CANONICAL_AXCODES, Volume


def resampled_size(n: int, spacing: float, target: float) -> int:
    """CT-CLIP's resize_array: int(n * (spacing / target)), truncating, in that operation order."""
    return int(n * (spacing / target))


def crop_or_pad_window(n: int, target: int) -> tuple[int, int, int, int]:
    """CT-CLIP's centre crop/pad on one axis of length n: (start, stop, pad_before, pad_after)."""
    start = max((n - target) // 2, 0)
    stop = min(start + target, n)
    kept = stop - start
    before = (target - kept) // 2
    return start, stop, before, target - kept - before


def linear_sample_positions(n_in: int, n_out: int, start: int, stop: int):
    """F.interpolate's linear sampling (align_corners=False, output size given) for outputs [start, stop).

    Returns (index0, index1, weight1) as in PyTorch's upsample kernels: source position
    max((i + 0.5) * n_in / n_out - 0.5, 0), index1 = index0 + 1 clamped to the last voxel.
    """
    scale = n_in / n_out
    src = np.maximum((np.arange(start, stop, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = np.clip(src - i0, 0.0, 1.0)
    return i0, i1, w1


def _workers() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def _parallel_over(n: int, fn) -> None:
    """Run fn(indices) on contiguous blocks of range(n), one block per worker thread.

    numpy releases the GIL in its ufuncs, so plain threads use every core, and unlike many small
    multi-threaded torch ops they do not stall on thread barriers when the CPU is shared.
    """
    blocks = [b for b in np.array_split(np.arange(n), _workers()) if len(b)]
    if len(blocks) == 1:
        fn(blocks[0])
        return
    with ThreadPoolExecutor(len(blocks)) as pool:
        for result in pool.map(fn, blocks):
            del result  # re-raises a worker's exception


def _resample_axis(x: np.ndarray, axis: int, i0: np.ndarray, i1: np.ndarray, w1: np.ndarray,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Linear interpolation along `axis`, one output plane at a time:
    out_k = x_i0[k] + w1[k] * (x_i1[k] - x_i0[k]), with no temporaries beyond `out`."""
    if out is None:
        shape = list(x.shape)
        shape[axis] = len(i0)
        out = np.empty(shape, dtype=np.float32)
    src = np.moveaxis(x, axis, 0)
    dst = np.moveaxis(out, axis, 0)
    weights = w1.astype(np.float32)

    def run(ks):
        for k in ks:
            a, b, w = src[i0[k]], src[i1[k]], weights[k]
            o = dst[k]
            if w == 0 or i0[k] == i1[k]:
                o[...] = a
            else:
                np.subtract(b, a, out=o)
                o *= w
                o += a

    _parallel_over(len(i0), run)
    return out


def _resample_z_into(x: np.ndarray, i0: np.ndarray, i1: np.ndarray, w1: np.ndarray, out: np.ndarray) -> None:
    """Linear interpolation along the last (contiguous) axis of x (X, Y, Z), written to out (Z', X, Y).

    Works one x-plane at a time: gathering along the contiguous axis and transposing a plane that
    fits in cache avoids the strided full-volume reads a plane-per-output-slice loop would do.
    """
    weights = w1.astype(np.float32)

    def run(ps):
        for p in ps:
            plane = x[p]  # (Y, Z)
            a = plane.take(i0, axis=1)
            b = plane.take(i1, axis=1)
            b -= a
            b *= weights
            b += a
            out[:, p, :] = b.T

    _parallel_over(x.shape[0], run)


def _as_array(hu) -> np.ndarray:
    if isinstance(hu, torch.Tensor):
        hu = hu.detach().cpu().numpy()
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise VolumeError(f"expected a 3D (X, Y, Z) array, got shape {tuple(hu.shape)}")
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise VolumeError(f"voxel type {hu.dtype} is not a real number type")
    return hu


def _is_identity(i0: np.ndarray, w1: np.ndarray, n: int) -> bool:
    return len(i0) == n and np.array_equal(i0, np.arange(n)) and not w1.any()


def preprocess_array(hu, spacing_mm: tuple[float, float, float], config: PreprocessConfig = PreprocessConfig(),
                     *, source: str = "<array>") -> torch.Tensor:
    """HU array (X, Y, Z), any real dtype (int16 works) → encoder input (C, D=z, H=x, W=y) float32
    (C = config.channels; with `config.base`, the one plain channel that `apply_windows` starts from).
    The "m3d" recipe gives (1, D=z, H=y, W=x) in [0, 1] instead (preprocess_m3d)."""
    if config.recipe == "m3d":
        return preprocess_m3d(hu, config, source=source)
    hu = _as_array(hu)
    sizes = [resampled_size(n, s, t) for n, s, t in zip(hu.shape, spacing_mm, config.spacing_mm)]
    if min(sizes) < 1:
        raise VolumeError(f"volume {hu.shape} at {tuple(spacing_mm)} mm resamples to an empty grid {sizes}", source)
    windows = [crop_or_pad_window(m, t) for m, t in zip(sizes, config.shape_xyz)]
    samples = [linear_sample_positions(n, m, w[0], w[1]) for n, m, w in zip(hu.shape, sizes, windows)]

    # Only the input voxels that some kept output voxel reads are converted and resampled.
    first = [int(i0[0]) for i0, _, _ in samples]
    samples = [(i0 - f, i1 - f, w1) for (i0, i1, w1), f in zip(samples, first)]
    region = hu[tuple(slice(f, f + int(i1[-1]) + 1) for f, (_, i1, _) in zip(first, samples))]
    x = np.empty(region.shape, dtype=np.float32)
    # Scaling to [-1, 1] is affine, so it commutes with linear interpolation and clipping: doing
    # it first, fused with the conversion, saves a pass (values agree to float rounding).
    lo, hi = config.hu_range
    mid, half = np.float32((lo + hi) / 2), np.float32((hi - lo) / 2)

    def convert(ks):
        for k in ks:
            plane = x[k]
            plane[...] = region[k]
            if mid != 0:
                plane -= mid
            plane /= half
            if config.clip_before_resample:
                np.clip(plane, -1.0, 1.0, out=plane)

    _parallel_over(x.shape[0], convert)

    # x and y passes on the (X, Y, Z) layout, then the z pass writes each output slice straight
    # into the padded (D, H, W) result.
    for axis in (0, 1):
        i0, i1, w1 = samples[axis]
        if not _is_identity(i0, w1, x.shape[axis]):
            x = _resample_axis(x, axis, i0, i1, w1)
    (_, _, xb, xa), (_, _, yb, ya), (_, _, zb, za) = windows
    tx, ty, tz = config.shape_xyz
    out = np.full((tz, tx, ty), -1.0, dtype=np.float32)
    inner = out[zb:tz - za, xb:tx - xa, yb:ty - ya]
    _resample_z_into(x, *samples[2], out=inner)
    if not config.clip_before_resample:
        np.clip(inner, -1.0, 1.0, out=inner)
    if not math.isfinite(float(np.sum(inner, dtype=np.float64))):
        raise VolumeError("preprocessing produced non-finite values (NaN or infinite voxels in the input?)", source)
    return apply_windows(torch.from_numpy(out).unsqueeze(0), config)


def preprocess_m3d(hu, config: PreprocessConfig, *, source: str = "<array>") -> torch.Tensor:
    """M3D's preparation (github.com/BAAI-DCAI/M3D, Data/process/m3d_cap_data_prepare.py and
    m3d_seg_data_prepare.py; README: "1*32*256*256", "normalized to 0-1, consider Min-Max
    Normalization"): array (X, Y, Z) → (1, D=z, H=y, W=x) float32 in [0, 1] of size
    config.shape_xyz[::-1] ((1, 32, 256, 256) for M3D_PREPROCESS).

    1. min-max over the whole volume to [0, 1] (no HU window: M3D's model never sees HU);
    2. MONAI CropForeground(): the bounding box of the voxels > 0 after step 1, no margin;
    3. MONAI Resize(spatial_size, mode="bilinear"): trilinear F.interpolate, align_corners None
       (= False), no anti-aliasing; the voxel spacing plays no part.
    Axes: with rad3d's L,P,S voxel order, (D, H, W) = (S, P, L) is the axial image as displayed
    (rows anterior → posterior, columns the patient's right → left), how M3D-Cap's Radiopaedia slices
    are stored, and M3D-Seg's `swapaxes(-1, -3)` also gives (Z, Y, X). (CT-CLIP's recipe gives
    (S, L, P).) M3D fixes no slice direction; D runs inferior → superior here."""
    hu = _as_array(hu)
    lo, hi = float(hu.min()), float(hu.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise VolumeError("volume holds NaN or infinite voxels: min-max normalisation is undefined", source)
    if hi <= lo:
        raise VolumeError(f"volume is constant ({lo:g}): min-max normalisation is undefined", source)
    foreground = hu > lo  # the voxels > 0 after min-max
    box = []
    for axis in range(3):
        hit = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    del foreground
    x = torch.from_numpy(np.array(hu[tuple(box)], dtype=np.float32)).permute(2, 1, 0)  # (Z, Y, X), one copy
    x.sub_(lo).div_(hi - lo)
    tx, ty, tz = config.shape_xyz
    x = F.interpolate(x[None, None], size=(tz, ty, tx), mode="trilinear", align_corners=False)[0]
    return x.clamp_(0.0, 1.0).contiguous()  # the clamp only undoes float rounding at the ends


def apply_windows(x: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """(..., 1, D, H, W) in [-1, 1] over `config.hu_range` → (..., channels, D, H, W): one channel
    per HU window (clip to the window, map to [-1, 1]), or the input channel when there are none,
    then the reference channel if configured. Pointwise (the reference depends only on the voxel
    index), so it may follow resampling, crop, padding (padding reads as `hu_range`'s low end) and
    training's shifts; a batch dimension in front is allowed."""
    if config.windows:
        lo, hi = config.hu_range
        hu = x[..., 0, :, :, :] * ((hi - lo) / 2) + (lo + hi) / 2
        x = torch.stack([((hu - w_lo) / ((w_hi - w_lo) / 2) - 1.0).clamp_(-1.0, 1.0)
                         for w_lo, w_hi in config.windows], dim=-4).to(torch.float32)
    if config.reference_channel:
        x = torch.cat([x, checkerboard(x.shape[-3:], config.reference_channel).expand(
            *x.shape[:-4], 1, *x.shape[-3:])], dim=-4)
    return x


def checkerboard(shape_dhw, amplitude: float) -> torch.Tensor:
    """(1, D, H, W): +amplitude where d + h + w is even, -amplitude where it is odd."""
    d, h, w = (torch.arange(n) for n in shape_dhw)
    parity = (d[:, None, None] + h[None, :, None] + w[None, None, :]) % 2
    return (amplitude * (1 - 2 * parity)).to(torch.float32).unsqueeze(0)


def _check_orientation(volume: Volume) -> None:
    if tuple(volume.axcodes) != CANONICAL_AXCODES:
        raise VolumeError(
            f"voxel order {''.join(volume.axcodes)} is not the encoder's {''.join(CANONICAL_AXCODES)}: "
            "read it with engine.io (which reorients)",
            volume.source,
        )


def preprocess(volume: Volume, config: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """Volume (HU, canonical order) → encoder input (C, D=z, H=x, W=y), float32 in [-1, 1] (the "m3d"
    recipe: (1, D=z, H=y, W=x) in [0, 1])."""
    _check_orientation(volume)
    return preprocess_array(volume.hu, volume.spacing_mm, config, source=volume.source)


def preprocess_plain(hu, spacing_mm: tuple[float, float, float], config: PreprocessConfig = PreprocessConfig(),
                     *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The literal full-volume path (CT-CLIP's order of operations, float64 by default): the reference.
    The "m3d" recipe has one path, preprocess_m3d."""
    if config.recipe == "m3d":
        return preprocess_m3d(hu, config)
    hu = _as_array(hu)
    lo, hi = config.hu_range
    x = torch.from_numpy(np.ascontiguousarray(hu)).to(dtype).permute(2, 0, 1)  # (Z, X, Y)
    if config.clip_before_resample:
        x = x.clamp(lo, hi)
    sizes = [resampled_size(n, s, t) for n, s, t in zip(hu.shape, spacing_mm, config.spacing_mm)]
    x = F.interpolate(x[None, None], size=(sizes[2], sizes[0], sizes[1]), mode="trilinear", align_corners=False)[0, 0]
    x = x.permute(1, 2, 0)  # (X, Y, Z)
    if not config.clip_before_resample:
        x = x.clamp(lo, hi)
    x = ((x - (lo + hi) / 2) / ((hi - lo) / 2)).to(torch.float32)
    windows = [crop_or_pad_window(m, t) for m, t in zip(x.shape, config.shape_xyz)]
    x = x[tuple(slice(w[0], w[1]) for w in windows)]
    (_, _, xb, xa), (_, _, yb, ya), (_, _, zb, za) = windows
    x = F.pad(x, (zb, za, yb, ya, xb, xa), value=-1.0)
    return apply_windows(x.permute(2, 0, 1).unsqueeze(0).contiguous(), config)
