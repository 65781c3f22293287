"""The one volume type every reader produces and every later step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# rad3d's canonical voxel order. Axis 0 runs towards the patient's Left, axis 1 towards
# Posterior, axis 2 towards Superior (DICOM's LPS patient axes, nibabel codes ("L", "P", "S")).
# CT-RATE's files are stored this way and CT-CLIP's `permute(2, 0, 1)` then shows the encoder
# a (D, H, W) = (S, L, P) tensor ("SLP+"), so every reader brings its input to this order.
CANONICAL_AXCODES: tuple[str, str, str] = ("L", "P", "S")


@dataclass
class Volume:
    """A CT volume in Hounsfield units.

    hu:          float32 array (X, Y, Z) in CANONICAL_AXCODES voxel order.
    spacing_mm:  voxel size along (X, Y, Z) in millimetres.
    source:      where it came from (a path or a description), for error messages.
    meta:        source metadata with patient-identifying fields removed.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    source: str = "<memory>"
    axcodes: tuple[str, str, str] = CANONICAL_AXCODES
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(float(n * s) for n, s in zip(self.hu.shape, self.spacing_mm))  # type: ignore[return-value]


FILL_BORDER_SHARE = 0.3  # one exact value on this share of the border voxels is a fill, not anatomy


def fill_value(hu: np.ndarray) -> float | None:
    """The constant a scanner or converter wrote outside its reconstruction circle or for the
    background (-3024, -2048, -1024, 0 ...): the exact value that covers a large share of the
    volume's in-plane border, or None. Real air is noisy and never one exact value over that much."""
    border = np.concatenate([hu[[0, -1], :, :].ravel(), hu[:, [0, -1], :].ravel()])
    values, counts = np.unique(border, return_counts=True)
    top = int(np.argmax(counts))
    return float(values[top]) if counts[top] >= FILL_BORDER_SHARE * border.size else None
