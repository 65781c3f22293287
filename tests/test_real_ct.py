"""Real chest CTs (NRRD files that slicerio and pyradiomics ship as their own test data) through the
whole input path: read, oriented to L,P,S (checked on the anatomy), preprocessed for CT-CLIP, shown
in the viewer and reported by `rad3d report`.

`bash scripts/install.sh test` fetches them (scripts/fetch_test_data.py, pinned and checksummed) into
tests/data/real_ct/. Without them these tests are skipped, except in CI (CI=true), where they fail."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from engine.io import load_volume, read_itk  # noqa: E402
from fetch_test_data import ARCHIVES, DEST  # noqa: E402

# name → (stored voxel axes as the header states them, shape, spacing in mm)
CTS = {
    "CTChest4.nrrd": ("RAS", (128, 128, 34), (3.046876, 3.046876, 10.0)),
    "lung1_image.nrrd": ("LPS", (512, 512, 48), (0.5703125, 0.5703125, 5.0)),
    "lung2_image.nrrd": ("LPS", (512, 512, 61), (0.6269531, 0.6269531, 5.0)),
}
assert set(CTS) == {name for a in ARCHIVES for name, _ in a.members.values()}


def real_ct(name: str) -> Path:
    path = DEST / name
    if path.is_file():
        return path
    why = f"{path} is missing: `bash scripts/install.sh test` (or `python3 scripts/fetch_test_data.py`) fetches it"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module", params=list(CTS))
def ct(request):
    return request.param, load_volume(real_ct(request.param))


@pytest.fixture(scope="module")
def anatomies():
    return {}  # name → Anatomy, found once per module


def anatomy_of(ct, anatomies):
    name, vol = ct
    if name not in anatomies:
        anatomies[name] = find_anatomy(vol)
    return anatomies[name]


# ---- anatomy, found from intensities alone (no orientation assumed) ----

BONE_HU, AIR_HU = 200.0, -400.0


@dataclass
class Anatomy:
    spine_xy: np.ndarray  # voxel (x, y) of the vertebral column
    lung_pairs: list  # (z, centre of one lung (x, y), centre of the other), sorted by x, per axial slice
    lung_z: float  # area-weighted mean slice of the lungs
    airway_z: list  # slices holding a small midline air tube anterior to the spine (trachea, main bronchi)
    mediastinum_x: float  # mean x of the soft tissue between the lungs, anterior to the spine (heart, arch)
    step: int  # in-plane stride the analysis used


def find_anatomy(vol) -> Anatomy:
    step = max(1, int(round(2.0 / min(vol.spacing_mm[:2]))))  # ~2 mm in-plane is plenty and fast
    hu = vol.hu[::step, ::step]
    sx, sy = vol.spacing_mm[0] * step, vol.spacing_mm[1] * step
    cm2 = sx * sy / 100.0
    # The spine: the largest patch of (x, y) columns that are bone in most slices (ribs slant, so
    # they are bone in few slices at any one (x, y); vertebrae stack).
    lab, n = ndi.label((hu > BONE_HU).mean(axis=2) > 0.5)
    assert n > 0, "no column is bone in most slices: no spine found"
    biggest = 1 + int(np.argmax(ndi.sum_labels(np.ones_like(lab), lab, np.arange(1, n + 1))))
    spine = np.array(ndi.center_of_mass(lab == biggest))
    pairs, weights, airway = [], [], []
    for k in range(hu.shape[2]):
        lab2, m = ndi.label(hu[:, :, k] < AIR_HU)
        outside = set(np.unique(np.concatenate([lab2[0], lab2[-1], lab2[:, 0], lab2[:, -1]]))) | {0}
        areas = ndi.sum_labels(np.ones_like(lab2), lab2, np.arange(m + 1)) * cm2
        inside = sorted((i for i in range(1, m + 1) if i not in outside), key=lambda i: -areas[i])
        big = [i for i in inside if areas[i] > 10.0]  # a lung's cross-section: over 10 cm²
        if len(big) >= 2:
            a, b = sorted((np.array(ndi.center_of_mass(lab2 == i)) for i in big[:2]), key=lambda c: c[0])
            pairs.append((k, a, b))
            weights.append(areas[big[0]] + areas[big[1]])
        for i in inside:
            if 1.0 < areas[i] < 8.0:  # a tube 1-3 cm wide
                c = ndi.center_of_mass(lab2 == i)
                if abs(c[0] - spine[0]) * sx < 20.0 and c[1] < spine[1]:
                    airway.append(k)
    assert len(pairs) >= 10, f"only {len(pairs)} slices show two lungs"
    xs, ws = [], []
    for k, a, b in pairs:
        band = hu[int(a[0]):int(b[0]), :int(spine[1]) - 3, k]
        soft = (band > -100) & (band < 400)
        if soft.any():
            xs.append(np.nonzero(soft)[0].mean() + int(a[0]))
            ws.append(soft.sum())
    return Anatomy(spine, pairs, float(np.average([k for k, *_ in pairs], weights=weights)), airway,
                   float(np.average(xs, weights=ws)), step)


# ---- read and orientation ----

def test_read_with_header_geometry_in_hounsfield_units(ct):
    name, vol = ct
    stored_axes, shape, spacing = CTS[name]
    assert vol.hu.dtype == np.float32 and vol.shape == shape and vol.axcodes == ("L", "P", "S")
    np.testing.assert_allclose(vol.spacing_mm, spacing, rtol=1e-5)
    assert vol.meta["format"] == "nrrd" and vol.meta["header_axcodes"] == stored_axes
    assert vol.meta["nrrd_space"] == "left-posterior-superior"
    inside = vol.hu[vol.hu > -1500]  # CTChest4 pads outside its field of view with -3024
    assert np.mean(inside < -900) > 0.1 and np.mean((inside > -100) & (inside < 100)) > 0.1  # air and soft tissue
    assert vol.hu.max() > 1000  # bone


def test_stored_right_anterior_axes_are_flipped_to_left_posterior():
    """CTChest4 stores x towards Right and y towards Anterior: the reader flips exactly those two."""
    path = real_ct("CTChest4.nrrd")
    stored = read_itk(path, reorient=False)
    assert stored.meta["reoriented"] is False
    np.testing.assert_array_equal(read_itk(path).hu, stored.hu[::-1, ::-1, :])


def test_lungs_left_and_right_of_the_spine_head_end_superior(ct, anatomies):
    name, vol = ct
    anatomy = anatomy_of(ct, anatomies)
    sx = vol.spacing_mm[0] * anatomy.step
    # the spine (dense, in every slice) lies between the two lungs and posterior to both (+y = P)
    between = [a[0] < anatomy.spine_xy[0] < b[0] and anatomy.spine_xy[1] > max(a[1], b[1])
               for _, a, b in anatomy.lung_pairs]
    assert np.mean(between) >= 0.85, f"{name}: spine between and behind the lungs in only {np.mean(between):.0%}"
    # the lungs' centres are well apart on either side
    gaps = [(b[0] - a[0]) * sx for _, a, b in anatomy.lung_pairs]
    assert np.median(gaps) > 100.0
    # the trachea runs down from the head end: its slices lie above (+z = S) the lungs' mass
    assert len(anatomy.airway_z) >= 5
    above_mm = (np.mean(anatomy.airway_z) - anatomy.lung_z) * vol.spacing_mm[2]
    assert above_mm > 30.0, f"{name}: airway {above_mm:.0f} mm above the lungs' mass, not superior"
    # heart and aortic arch bulge to the patient's left (+x = L) of the spine: the one left-right
    # asymmetry here, so a mirrored volume fails (the checks above hold either way)
    assert (anatomy.mediastinum_x - anatomy.spine_xy[0]) * sx > 8.0, f"{name}: mediastinum not left of the spine"


# ---- preprocessing, viewer, report ----

def test_ctclip_preprocessing_keeps_geometry_and_orientation():
    import torch

    from engine.preprocess import PreprocessConfig, preprocess

    vol = load_volume(real_ct("lung1_image.nrrd"))
    config = PreprocessConfig()  # CT-CLIP's: 0.75 x 0.75 x 1.5 mm, [-1000, 1000] HU, 480 x 480 x 240
    out = preprocess(vol, config)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, 240, 480, 480)  # (C, D=S, H=L, W=P)
    arr = out[0].numpy()
    assert arr.min() >= -1.0 and arr.max() <= 1.0
    # the field of view (512 x 0.57 mm = 292 mm; 48 x 5 mm = 240 mm) is smaller than 360 x 360 x 360 mm:
    # the resampled scan sits in the centre, padded with -1 around it
    content = [int(n * s / t) for n, s, t in zip(vol.shape, vol.spacing_mm, config.spacing_mm)]
    assert content == [389, 389, 160]
    for axis, (n, target) in enumerate(zip((content[2], content[0], content[1]), (240, 480, 480))):
        before = (target - n) // 2
        moved = np.moveaxis(arr, axis, 0)
        assert np.all(moved[:before] == -1.0) and np.all(moved[before + n:] == -1.0)
        assert np.any(moved[before] > -1.0) and np.any(moved[before + n - 1] > -1.0)
    # bone stays posterior (the spine in the high-W half) and air fills the lungs
    bone_w = np.nonzero(arr > 0.3)[2]
    assert np.median(bone_w) > 240
    assert np.mean(arr[arr > -1.0] < -0.8) > 0.2


def test_viewer_shows_the_anatomy_where_its_letters_say(ct, anatomies):
    from ui.viewer import ORIENTATION_LETTERS, PLANES, WINDOW_PRESETS, Crosshair, plane_slice, render_views

    name, vol = ct
    anatomy = anatomy_of(ct, anatomies)
    x, y = (int(round(c * anatomy.step)) for c in anatomy.spine_xy)
    z_lung = int(round(anatomy.lung_z))
    images = render_views(vol.hu, vol.spacing_mm, Crosshair(x, y, z_lung), *WINDOW_PRESETS["lung"], max_side=256)
    assert [im.mode for im in images] == ["RGB"] * 3 and all(max(im.size) == 256 for im in images)
    assert ORIENTATION_LETTERS["axial"] == ("A", "P", "R", "L")

    # Mark the anatomy in a label volume and find where the viewer's slicing puts it on screen.
    marks = np.zeros(vol.shape, dtype=np.uint8)
    marks[x, y, :] = 1  # spine column
    marks[int(round(anatomy.mediastinum_x * anatomy.step)), :, :] = 2  # heart side
    marks[:, :, int(round(np.mean(anatomy.airway_z)))] = 3  # trachea level
    axial = plane_slice(marks, "axial", z_lung)
    rows, cols = np.nonzero(axial == 1)
    top, bottom, left, right = ORIENTATION_LETTERS["axial"]
    assert bottom == "P" and rows[0] > axial.shape[0] / 2  # spine in the lower half, next to "P"
    heart_col = np.nonzero(axial == 2)[1][0]
    assert right == "L" and heart_col > cols[0]  # heart on the screen's right, the side marked "L"
    coronal = plane_slice(marks, "coronal", y)
    top, bottom, _, _ = ORIENTATION_LETTERS["coronal"]
    trachea_row = np.nonzero(coronal == 3)[0][0]
    lung_row = vol.shape[2] - 1 - z_lung
    assert top == "S" and trachea_row < lung_row  # trachea above the lungs' middle, towards "S"
    sagittal = plane_slice(marks, "sagittal", x)
    _, _, left, right = ORIENTATION_LETTERS["sagittal"]
    assert right == "P" and np.nonzero(sagittal == 1)[1][0] > sagittal.shape[1] / 2
    assert set(PLANES) == set(ORIENTATION_LETTERS)


def test_report_command_on_real_ct_in_each_format(tiny_run, tmp_path, capsys):  # noqa: F811
    """`rad3d report` on the real NRRD, the same scan as MetaImage and as NIfTI: one answer."""
    import nibabel as nib
    import SimpleITK as sitk

    import cli

    nrrd = real_ct("CTChest4.nrrd")
    mha = tmp_path / "CTChest4.mha"
    sitk.WriteImage(sitk.ReadImage(str(nrrd)), str(mha), useCompression=True)
    vol = load_volume(nrrd)
    nii = tmp_path / "CTChest4.nii.gz"  # voxels already L,P,S: the RAS+ affine negates x and y
    nib.save(nib.Nifti1Image(vol.hu.astype(np.int16), np.diag([-vol.spacing_mm[0], -vol.spacing_mm[1],
                                                                vol.spacing_mm[2], 1.0])), nii)
    outputs = []
    for path in (nrrd, mha, nii):
        assert cli.main(["report", str(path), "--run", str(tiny_run[0]), "--json", "--device", "cpu"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert [o["volume"] for o in outputs] == [str(nrrd), str(mha), str(nii)]
    assert len(outputs[0]["probabilities"]) == 18 and outputs[0]["report"]
    for other in outputs[1:]:
        np.testing.assert_allclose(list(other["probabilities"].values()),
                                   list(outputs[0]["probabilities"].values()), atol=1e-6)
        assert other["report"] == outputs[0]["report"]
