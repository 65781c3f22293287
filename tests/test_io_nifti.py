"""NIfTI input: HU scaling, spacing, reorientation to LPS, and every kind of bad file named."""

import gzip
import struct

import numpy as np
import pytest

from conftest import lps_affine, write_nifti
from engine.errors import VolumeError
from engine.io import load_volume, read_nifti
from engine.preprocess import PreprocessConfig, preprocess

SPACING = (0.8, 0.7, 2.5)


def test_header_rescale_and_spacing(tmp_path, phantom):
    raw = (phantom + 1024).astype(np.int16)
    path = write_nifti(tmp_path / "ct.nii.gz", raw, lps_affine(SPACING), slope=1.0, inter=-1024.0)
    vol = read_nifti(path)
    assert vol.hu.dtype == np.float32
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing_mm, SPACING, rtol=1e-6)
    assert vol.axcodes == ("L", "P", "S") and vol.meta["header_axcodes"] == "LPS"


def _stored_permuted_flipped(hu, spacing, origin=(12.0, -30.0, 55.0)):
    """The same scan stored with voxel axes (S, R, P): B[k, i', j] = A[X-1-i', j, k], affine built by hand."""
    a = lps_affine(spacing, origin)
    stored = np.ascontiguousarray(hu[::-1].transpose(2, 0, 1))
    affine = np.eye(4)
    affine[:3, 0] = a[:3, 2]
    affine[:3, 1] = -a[:3, 0]
    affine[:3, 2] = a[:3, 1]
    affine[:3, 3] = a[:3, 3] + a[:3, 0] * (hu.shape[0] - 1)
    return stored, affine


def _stored_ras(hu, spacing):
    """The same scan stored the usual NIfTI way, voxel axes towards R, A, S."""
    a = lps_affine(spacing)
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = a[:3, 3] + a[:3, 0] * (hu.shape[0] - 1) + a[:3, 1] * (hu.shape[1] - 1)
    return np.ascontiguousarray(hu[::-1, ::-1]), affine


@pytest.mark.parametrize("store", [_stored_permuted_flipped, _stored_ras], ids=["SRP", "RAS"])
def test_reorients_other_voxel_orders_to_lps(tmp_path, phantom, store):
    stored, affine = store(phantom, SPACING)
    assert stored.shape != phantom.shape or not np.array_equal(stored, phantom)
    path = write_nifti(tmp_path / "ct.nii", stored, affine)
    vol = read_nifti(path)
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing_mm, SPACING, rtol=1e-6)
    # reorient=False trusts the stored voxel order (CT-RATE's convention)
    np.testing.assert_array_equal(read_nifti(path, reorient=False).hu, stored)


def test_metadata_rescale_and_spacing_as_stored(tmp_path, phantom):
    """CT-RATE style: raw stored values, rescale and spacing from the metadata CSV, no reorientation."""
    raw = (phantom + 1024).astype(np.int16)
    path = write_nifti(tmp_path / "train_1_a_1.nii.gz", raw, np.diag([3.0, 3.0, 3.0, 1.0]))
    vol = read_nifti(path, rescale=(1.0, -1024.0), spacing_mm=(0.75, 0.75, 1.5), reorient=False)
    np.testing.assert_array_equal(vol.hu, phantom)
    assert vol.spacing_mm == (0.75, 0.75, 1.5)
    with pytest.raises(VolumeError, match="raw stored values.*rescale missing") as err:
        read_nifti(path, reorient=False)
    assert "train_1_a_1.nii.gz" in str(err.value)


def test_trailing_singleton_dimension_is_accepted(tmp_path, phantom):
    path = write_nifti(tmp_path / "ct4.nii.gz", phantom[..., None], lps_affine(SPACING))
    assert read_nifti(path).shape == phantom.shape


def _expected_ramp_output(shape, spacing, coef, config):
    """Independent expectation: trilinear interpolation of a linear ramp is the ramp at the sample point."""
    axes = []
    for n, s, t, target in zip(shape, spacing, config.spacing_mm, config.shape_xyz):
        m = int(n * (s / t))
        src = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
        start = max((m - target) // 2, 0)
        kept = src[start:start + target]
        before = (target - len(kept)) // 2
        axes.append((kept, before))
    (cx, bx), (cy, by), (cz, bz) = axes
    values = -1000 + coef[0] * cx[:, None, None] + coef[1] * cy[None, :, None] + coef[2] * cz[None, None, :]
    out = np.full(config.shape_xyz, -1.0)
    out[bx:bx + len(cx), by:by + len(cy), bz:bz + len(cz)] = values / 1000
    return out.transpose(2, 0, 1)[None]


def test_round_trip_gives_exact_preprocessed_values(tmp_path):
    shape, spacing, coef = (20, 16, 12), (1.5, 1.2, 3.0), (40.0, 30.0, 50.0)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ramp = (-1000 + coef[0] * i + coef[1] * j + coef[2] * k).astype(np.float32)
    stored, affine = _stored_permuted_flipped(ramp, spacing)
    vol = read_nifti(write_nifti(tmp_path / "ramp.nii.gz", stored, affine))
    config = PreprocessConfig(shape_xyz=(32, 32, 20))  # x cropped (40 → 32), y padded (25 → 32), z cropped
    out = preprocess(vol, config)
    assert out.shape == (1, 20, 32, 32)
    np.testing.assert_allclose(out.numpy(), _expected_ramp_output(shape, spacing, coef, config), atol=2e-6)


# ---- bad input, each error naming the file ----

def _raises_naming(path, match, **kw):
    with pytest.raises(VolumeError, match=match) as err:
        load_volume(path, **kw)
    assert str(path) in str(err.value)


def test_truncated_gzip(tmp_path, phantom):
    path = write_nifti(tmp_path / "ct.nii.gz", phantom, lps_affine(SPACING))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises_naming(path, "corrupt or truncated")


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"this is not a NIfTI file" * 20)
    _raises_naming(path, "cannot read NIfTI")


def test_2d_and_4d(tmp_path, phantom):
    _raises_naming(write_nifti(tmp_path / "slice.nii", phantom[:, :, 0], lps_affine(SPACING)), "3D volume.*2D")
    four = np.stack([phantom, phantom], axis=-1)
    _raises_naming(write_nifti(tmp_path / "series.nii.gz", four, lps_affine(SPACING)), "3D volume.*4D")


def test_nan_voxels(tmp_path, phantom):
    phantom[3, 4, 5] = np.nan
    _raises_naming(write_nifti(tmp_path / "nan.nii.gz", phantom, lps_affine(SPACING)), "1 voxels are NaN")


def test_zero_spacing(tmp_path, phantom):
    path = write_nifti(tmp_path / "flat.nii", phantom, lps_affine(SPACING))
    header = bytearray(path.read_bytes())
    header[84:88] = struct.pack("<f", 0.0)  # pixdim[2] (y spacing); nibabel would "fix" it to 1 mm
    path.write_bytes(bytes(header))
    _raises_naming(path, "zero or missing spacing")
    ok = write_nifti(tmp_path / "ok.nii.gz", phantom, lps_affine(SPACING))
    _raises_naming(ok, "spacing", spacing_mm=(0.8, 0.0, 2.5), reorient=False)


def test_mr_like_intensities(tmp_path):
    rng = np.random.default_rng(0)
    mr = np.abs(rng.normal(300, 150, size=(32, 32, 16))).astype(np.float32)  # MR: non-negative, no air at -1000
    _raises_naming(write_nifti(tmp_path / "t1.nii.gz", mr, lps_affine(SPACING)), "look like MR")


def test_normalised_image_is_not_hu(tmp_path, phantom):
    _raises_naming(write_nifti(tmp_path / "norm.nii.gz", phantom / 1000, lps_affine(SPACING)), "not a CT in Hounsfield")


def test_double_rescale(tmp_path, phantom):
    """A NIfTI already in HU, rescaled again by a metadata CSV's intercept: the silent CT-RATE trap."""
    path = write_nifti(tmp_path / "valid_3_a_1.nii.gz", phantom.astype(np.int16), lps_affine(SPACING))
    _raises_naming(path, "double rescale", rescale=(1.0, -1024.0), reorient=False)


def test_padding_value_outside_fov_is_not_a_double_rescale(tmp_path, phantom):
    """Scanners fill the corners outside the reconstruction circle with a constant such as -2048."""
    x, y = np.meshgrid(np.linspace(-1, 1, phantom.shape[0]), np.linspace(-1, 1, phantom.shape[1]), indexing="ij")
    phantom[(x**2 + y**2) > 1] = -2048
    vol = read_nifti(write_nifti(tmp_path / "padded.nii.gz", phantom, lps_affine(SPACING)))
    assert vol.hu.min() == -2048


def test_unknown_suffix_and_missing_file(tmp_path):
    junk = tmp_path / "scan.txt"
    junk.write_text("hello")
    _raises_naming(junk, "unknown format")
    _raises_naming(tmp_path / "absent.nii.gz", "no such file")


def test_gzip_module_error_is_wrapped(tmp_path, phantom):
    path = write_nifti(tmp_path / "ct.nii", phantom, lps_affine(SPACING))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(path.read_bytes())[:-40])  # valid header, cut-off stream
    _raises_naming(bad, "corrupt or truncated")



def test_check_volume_limits(phantom):
    from engine.io import check_volume
    from engine.volume import Volume

    check_volume(Volume(hu=phantom, spacing_mm=SPACING, source="ok.nii"))  # the phantom itself is fine
    huge = np.full((2100, 8, 8), -1000.0, dtype=np.float32)
    huge[:, :4] = 40
    with pytest.raises(VolumeError, match="longer than 2048") as err:
        check_volume(Volume(hu=huge, spacing_mm=SPACING, source="huge.nii"))
    assert "huge.nii" in str(err.value)
    for spacing in [(0.8, -0.7, 2.5), (0.8, float("nan"), 2.5), (0.8, 0.7, 0.0)]:
        with pytest.raises(VolumeError, match="spacing"):
            check_volume(Volume(hu=phantom, spacing_mm=spacing, source="bad.nii"))
