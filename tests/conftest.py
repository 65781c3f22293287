"""Shared test helpers: a tiny chest-like phantom in HU and a NIfTI writer (keep this file small)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# The shared fixtures, registered once here: a fixture imported into a test module is a new definition
# per module, so a session-scoped one (a converted SmolLM2, a trained run) was built again in every module
# that imported it. Test modules import only the helpers (functions, constants) from these files.
pytest_plugins = ["decoder_fixtures", "training_fixtures", "run_fixtures", "consistency_fixtures"]


def chest_phantom(shape=(40, 36, 24)) -> np.ndarray:
    """Integer HU in LPS voxel order: air, an elliptic body (40 HU) with two lungs (-850), a spine (700).

    Asymmetric on purpose (the left lung is larger and the spine sits posterior), so a wrong flip
    or axis permutation changes the array.
    """
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1] = 40
    hu[((x - 0.4) / 0.35) ** 2 + (y / 0.45) ** 2 + (z / 1.2) ** 2 < 1] = -850  # left lung (+x = L)
    hu[((x + 0.4) / 0.25) ** 2 + (y / 0.4) ** 2 + (z / 1.2) ** 2 < 1] = -820
    hu[(x / 0.12) ** 2 + ((y - 0.5) / 0.12) ** 2 < 1] = 700  # spine (+y = P)
    hu += np.round(10 * z)  # a gradient along S
    return hu


def lps_affine(spacing, origin=(12.0, -30.0, 55.0)) -> np.ndarray:
    """nibabel (RAS+ world) affine of an array whose axes run towards L, P, S."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, slope=None, inter=None) -> Path:
    img = nib.Nifti1Image(data, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return path


@pytest.fixture
def phantom() -> np.ndarray:
    return chest_phantom()
