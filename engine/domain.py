"""Is this scan of the kind a run was made for? Two checks before a draft is trusted.

1. Body region, on the volume alone (no model): a chest CT shows two air-filled lungs inside the
   body, left and right of the midline, over most of its slices. A head (air only in the sinuses),
   an abdomen (bowel gas, at most the lung bases in the top slices) or a pelvis fails. The body is
   found from the body's own values, never from the corners alone, so a CT whose outside was
   stored as 0 HU or a constant padding value is read correctly.
2. Feature space, on the encoder's latent: the Mahalanobis distance to the run's training
   latents (mean and Ledoit-Wolf shrunk covariance, which stays invertible with fewer cases than
   dimensions), against a threshold calibrated on the validation split and stored with the run.

Model code here knows nothing of files: `FeatureGuard.to_tensors/from_tensors` are what a run
directory stores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.volume import Volume, fill_value

# Body region (chest) criteria. A chest CT's lungs fill most slices of its field of view; an
# abdomen CT reaches the lung bases in its top ~5-8 cm only.
LUNG_AIR_HU = -400.0          # lung parenchyma is -900..-600 HU; soft tissue is above -200
BODY_HU = -500.0              # body outline: tissue denser than lung
MIN_SIDE_AIR_FRACTION = 0.04  # each lung's air, as a fraction of the body's cross-section area
MIN_LUNG_SLICE_FRACTION = 0.40
MIN_LUNG_EXTENT_MM = 60.0
MIN_LUNG_VOLUME_ML = 300.0
_WORK_MM = 4.0                # the check runs on a ~4 mm grid: seconds would be wasted on detail


@dataclass(frozen=True)
class BodyRegion:
    """What the body-region check saw: lungs' extent, share of slices, volume, and the verdict."""

    is_chest: bool
    lung_slice_fraction: float
    lung_extent_mm: float
    lung_volume_ml: float
    body_slices: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _downsample(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    steps = [max(1, int(round(_WORK_MM / s))) for s in volume.spacing_mm]
    hu = np.asarray(volume.hu)[:: steps[0], :: steps[1], :: steps[2]]
    return hu.astype(np.float32, copy=False), tuple(s * k for s, k in zip(volume.spacing_mm, steps))


def body_region(volume: Volume) -> BodyRegion:
    """The body-region check on a Volume in HU, canonical L, P, S order (engine.volume)."""
    from scipy import ndimage

    hu, spacing = _downsample(volume)
    fill = fill_value(hu)
    padding = np.zeros(hu.shape, dtype=bool) if fill is None else hu == fill
    body = (hu > BODY_HU) & ~padding
    labels, n = ndimage.label(body)
    if n == 0:
        return BodyRegion(False, 0.0, 0.0, 0.0, 0, "no body found (nothing denser than lung)")
    sizes = ndimage.sum_labels(body, labels, index=np.arange(1, n + 1))
    body = labels == (1 + int(np.argmax(sizes)))  # the patient; the table and loose objects go
    # Per axial slice: fill the outline, so that lungs (and bowel gas) count as inside the body.
    filled = np.stack([ndimage.binary_fill_holes(body[:, :, k]) for k in range(body.shape[2])], axis=2)
    air = filled & (hu < LUNG_AIR_HU) & ~padding
    # Airways and small pockets are not lungs: keep air components of a lung's size.
    labels, n = ndimage.label(air)
    if n:
        voxel_ml = float(np.prod(spacing)) / 1000.0
        sizes = ndimage.sum_labels(air, labels, index=np.arange(1, n + 1)) * voxel_ml
        keep = np.flatnonzero(sizes >= 20.0) + 1
        air = np.isin(labels, keep)
    body_area = filled.sum(axis=(0, 1)).astype(np.float64)
    body_slices = body_area >= 0.05 * max(body_area.max(), 1.0)
    # Left and right of the body's midline (axis 0 runs towards the patient's left).
    xs = np.arange(hu.shape[0])[:, None, None]
    mid = (filled * xs).sum(axis=(0, 1)) / np.maximum(body_area, 1.0)
    right = (air & (xs < mid[None, None, :])).sum(axis=(0, 1))
    left = (air & (xs >= mid[None, None, :])).sum(axis=(0, 1))
    share = MIN_SIDE_AIR_FRACTION * np.maximum(body_area, 1.0)
    lung_slices = body_slices & (right >= share) & (left >= share)
    fraction = float(lung_slices.sum() / max(int(body_slices.sum()), 1))
    extent = float(lung_slices.sum() * spacing[2])
    volume_ml = float(air[:, :, lung_slices].sum() * np.prod(spacing) / 1000.0)
    failed = []
    if fraction < MIN_LUNG_SLICE_FRACTION:
        failed.append(f"lungs in {fraction:.0%} of the body's slices (a chest CT: at least "
                      f"{MIN_LUNG_SLICE_FRACTION:.0%})")
    if extent < MIN_LUNG_EXTENT_MM:
        failed.append(f"lungs over {extent:.0f} mm (at least {MIN_LUNG_EXTENT_MM:.0f})")
    if volume_ml < MIN_LUNG_VOLUME_ML:
        failed.append(f"lung air {volume_ml:.0f} ml (at least {MIN_LUNG_VOLUME_ML:.0f})")
    reason = "; ".join(failed) if failed else (f"two lungs over {extent:.0f} mm, {fraction:.0%} of slices, "
                                               f"{volume_ml:.0f} ml")
    return BodyRegion(not failed, fraction, extent, volume_ml, int(body_slices.sum()), reason)


@dataclass
class FeatureGuard:
    """Mahalanobis distance of an image latent to the training latents, with a threshold.

    mean: (d,); whitening: (d, d) W with W.T @ W = inverse shrunk covariance, so that the
    distance is |W (z - mean)|; threshold: distances above it are out of domain; calibration:
    how the threshold was chosen (split, quantile, cases, false-positive rate there)."""

    mean: np.ndarray
    whitening: np.ndarray
    threshold: float = float("inf")
    calibration: dict | None = None

    @classmethod
    def fit(cls, latents: np.ndarray) -> FeatureGuard:
        from sklearn.covariance import LedoitWolf

        latents = np.asarray(latents, dtype=np.float64)
        if latents.ndim != 2 or len(latents) < 2:
            raise ValueError(f"fitting the feature guard needs at least 2 latents, got shape {latents.shape}")
        lw = LedoitWolf().fit(latents)
        # Cholesky of the precision: |L.T (z - mean)|^2 = (z - mean)^T P (z - mean).
        chol = np.linalg.cholesky(lw.precision_)
        return cls(mean=lw.location_.astype(np.float32), whitening=chol.T.astype(np.float32))

    def distance(self, latents) -> np.ndarray:
        z = np.atleast_2d(np.asarray(latents, dtype=np.float64)) - self.mean.astype(np.float64)
        return np.linalg.norm(z @ self.whitening.astype(np.float64).T, axis=1)

    def calibrate(self, latents, *, split: str = "valid", quantile: float = 0.995, margin: float = 1.1) -> FeatureGuard:
        """Threshold = `margin` x the `quantile` of the distances of in-domain `latents` (the
        validation split, never the test split). The margin keeps in-domain scans of the same
        kind from being refused for sitting just past the calibration cases."""
        d = self.distance(latents)
        threshold = float(np.quantile(d, quantile) * margin)
        self.threshold = threshold
        self.calibration = {"split": split, "cases": int(len(d)), "quantile": quantile, "margin": margin,
                            "false_positive_rate": float(np.mean(d > threshold)),
                            "distance_median": float(np.median(d)), "distance_max": float(d.max())}
        return self

    def outside(self, latents) -> np.ndarray:
        return self.distance(latents) > self.threshold

    # -- what a run directory stores -------------------------------------------------------------
    def to_tensors(self) -> dict:
        import torch

        return {"mean": torch.from_numpy(np.ascontiguousarray(self.mean, dtype=np.float32)),
                "whitening": torch.from_numpy(np.ascontiguousarray(self.whitening, dtype=np.float32))}

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "calibration": self.calibration}

    @classmethod
    def from_tensors(cls, tensors: dict, info: dict) -> FeatureGuard:
        return cls(mean=tensors["mean"].float().numpy(), whitening=tensors["whitening"].float().numpy(),
                   threshold=float(info.get("threshold", float("inf"))), calibration=info.get("calibration"))


@dataclass(frozen=True)
class DomainCheck:
    """The verdict shown beside a draft: both checks and one sentence for people."""

    body: BodyRegion | None
    distance: float | None
    threshold: float | None

    @property
    def feature_outside(self) -> bool:
        return self.distance is not None and self.threshold is not None and self.distance > self.threshold

    @property
    def in_domain(self) -> bool:
        return (self.body is None or self.body.is_chest) and not self.feature_outside

    def message(self) -> str:
        if self.in_domain:
            return "chest CT within the model's domain"
        parts = []
        if self.body is not None and not self.body.is_chest:
            parts.append(f"not a chest CT ({self.body.reason})")
        if self.feature_outside:
            parts.append(f"image features far from the training scans (distance {self.distance:.1f} > "
                         f"threshold {self.threshold:.1f})")
        return "outside the model's domain: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {"in_domain": self.in_domain, "message": self.message(),
                "body_region": None if self.body is None else self.body.to_dict(),
                "feature_distance": self.distance, "feature_threshold": self.threshold}
