"""MetaImage and NRRD input: HU, spacing and reorientation to L,P,S from the direction matrix (NRRD
written by hand, so the test does not trust ITK's writer), and every kind of bad file named, the
oversized ones before any voxel is read."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import lps_affine, write_nifti
from engine.errors import VolumeError
from engine.io import ITK_SUFFIXES, load_volume, read_itk, read_nifti

SPACING = (0.8, 0.7, 2.5)


def write_nrrd(path, data_xyz: np.ndarray, directions, *, space="left-posterior-superior", origin=(12.0, -30.0, 55.0),
               encoding="raw", extra="", cut: int = 0):
    """A NRRD file from scratch: `directions` are the voxel axes' vectors in `space` (mm per voxel)."""
    data = np.asarray(data_xyz)
    dtype = {np.dtype(np.int16): "short", np.dtype(np.float32): "float", np.dtype(np.int32): "int"}[data.dtype]
    lines = ["NRRD0004", f"type: {dtype}", f"dimension: {data.ndim}"]
    if space:
        lines.append(f"space: {space}")
    else:
        lines.append(f"space dimension: {len(directions[0])}")
    lines += [
        "sizes: " + " ".join(str(n) for n in data.shape),
        "space directions: " + " ".join("(" + ",".join(f"{v:g}" for v in d) + ")" for d in directions)
        + " none" * (data.ndim - len(directions)),
        "kinds: " + " ".join(["domain"] * len(directions) + ["list"] * (data.ndim - len(directions))),
        "endian: little",
        f"encoding: {encoding}",
        "space origin: (" + ",".join(f"{v:g}" for v in origin) + ")",
    ]
    body = np.asfortranarray(data).tobytes(order="F")  # NRRD: first axis fastest
    if encoding == "gzip":
        body = gzip.compress(body)
    blob = ("\n".join(lines) + "\n" + extra + "\n").encode() + body
    path.write_bytes(blob[: len(blob) - cut])
    return path


def lps_directions(spacing):
    return [(spacing[0], 0, 0), (0, spacing[1], 0), (0, 0, spacing[2])]


def test_nrrd_in_lps_reads_as_stored(tmp_path, phantom):
    path = write_nrrd(tmp_path / "ct.nrrd", phantom.astype(np.int16), lps_directions(SPACING), encoding="gzip")
    vol = load_volume(path)
    assert vol.hu.dtype == np.float32 and vol.hu.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing_mm, SPACING, rtol=1e-6)
    assert vol.meta == {"format": "nrrd", "header_axcodes": "LPS", "reoriented": True,
                        "nrrd_space": "left-posterior-superior"}


def test_nrrd_in_ras_space_is_flipped_to_lps(tmp_path, phantom):
    """`space: right-anterior-superior` with identity directions: voxel axes run R, A, S."""
    stored = np.ascontiguousarray(phantom[::-1, ::-1])
    path = write_nrrd(tmp_path / "ras.nrrd", stored.astype(np.int16), lps_directions(SPACING),
                      space="right-anterior-superior")
    vol = read_itk(path)
    assert vol.meta["header_axcodes"] == "RAS"
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_array_equal(read_itk(path, reorient=False).hu, stored)


def test_nrrd_permuted_and_flipped_axes(tmp_path, phantom):
    """Voxel axes stored as (S, R, P): B[k, i', j] = A[X-1-i', j, k]."""
    stored = np.ascontiguousarray(phantom[::-1].transpose(2, 0, 1))
    directions = [(0, 0, SPACING[2]), (-SPACING[0], 0, 0), (0, SPACING[1], 0)]  # in LPS
    vol = read_itk(write_nrrd(tmp_path / "srp.nrrd", stored.astype(np.int16), directions))
    assert vol.meta["header_axcodes"] == "SRP"
    np.testing.assert_array_equal(vol.hu, phantom)
    np.testing.assert_allclose(vol.spacing_mm, SPACING, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_metaimage_same_volume_as_nifti(tmp_path, phantom, suffix):
    """A MetaImage whose voxels run R, A, S (ITK direction diag(-1, -1, 1)) reads as the NIfTI of the scan."""
    stored = np.ascontiguousarray(phantom[::-1, ::-1]).astype(np.int16)
    image = sitk.GetImageFromArray(stored.transpose(2, 1, 0))  # sitk arrays are (k, j, i)
    image.SetSpacing(SPACING)
    image.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(path), useCompression=suffix == ".mha")
    if suffix == ".mhd":
        assert (tmp_path / "ct.raw").is_file() or (tmp_path / "ct.zraw").is_file()
    vol = load_volume(path)
    assert vol.meta["format"] == "metaimage" and vol.meta["header_axcodes"] == "RAS"
    nifti = read_nifti(write_nifti(tmp_path / "ct.nii.gz", phantom.astype(np.int16), lps_affine(SPACING)))
    np.testing.assert_array_equal(vol.hu, nifti.hu)
    np.testing.assert_allclose(vol.spacing_mm, nifti.spacing_mm, rtol=1e-6)


def test_trailing_singleton_axis_is_accepted(tmp_path, phantom):
    path = write_nrrd(tmp_path / "ct4.nrrd", phantom[..., None].astype(np.int16), lps_directions(SPACING) + [])
    assert read_itk(path).shape == phantom.shape


def test_suffixes_are_dispatched():
    assert set(ITK_SUFFIXES) == {".mha", ".mhd", ".nrrd", ".nhdr"}


def test_upload_area_accepts_single_file_formats(tmp_path, phantom):
    from ui.uploads import UploadArea

    source = write_nrrd(tmp_path / "scan.nrrd", phantom.astype(np.int16), lps_directions(SPACING))
    area = UploadArea(tmp_path / "uploads")
    volume = area.load(area.store(source, "scan.nrrd", "session-1"), "session-1")
    np.testing.assert_array_equal(volume.hu, phantom)
    assert volume.source == "scan.nrrd (uploaded)"
    with pytest.raises(VolumeError, match="scan.mhd is not a NIfTI file .* MetaImage \\(.mha\\)"):
        area.check("scan.mhd", 100)  # a detached header cannot come without its data file


# ---- bad input, each error naming the file ----

def _raises_naming(path, match, **kw):
    with pytest.raises(VolumeError, match=match) as err:
        load_volume(path, **kw)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_huge_header_refused_before_reading_voxels(tmp_path, phantom):
    """A header claiming 40000 x 40000 x 40000 voxels over a few bytes of data: no allocation is tried."""
    path = write_nrrd(tmp_path / "huge.nrrd", phantom.astype(np.int16), lps_directions(SPACING))
    text = path.read_bytes().replace(b"sizes: 40 36 24", b"sizes: 40000 40000 40000")
    path.write_bytes(text)
    start = time.perf_counter()
    _raises_naming(path, r"shape \(40000, 40000, 40000\) has an axis longer than")
    assert time.perf_counter() - start < 1.0
    mha = tmp_path / "huge.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 3000 3000 3000\nElementType = MET_SHORT\n"
                    b"ElementSpacing = 1 1 1\nElementDataFile = LOCAL\n" + b"\0" * 64)
    _raises_naming(mha, r"shape \(3000, 3000, 3000\) has an axis longer than")
    # the budget counts the voxel type's bytes: 1000^3 float64 voxels (8 GB) are refused, int16 would fit
    wide = tmp_path / "wide.mha"
    wide.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\nElementType = MET_DOUBLE\n"
                     b"ElementSpacing = 1 1 1\nElementDataFile = LOCAL\n" + b"\0" * 64)
    _raises_naming(wide, r"\(1000, 1000, 1000\) would take .* over the memory budget")


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_truncated_nrrd(tmp_path, phantom, encoding):
    path = write_nrrd(tmp_path / "cut.nrrd", phantom.astype(np.int16), lps_directions(SPACING), encoding=encoding,
                      cut=200)
    _raises_naming(path, r"cannot read NRRD voxels \(corrupt or truncated file\?\)")


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_metaimage(tmp_path, phantom, compress):
    path = tmp_path / "cut.mha"
    sitk.WriteImage(sitk.GetImageFromArray(phantom.astype(np.int16).transpose(2, 1, 0)), str(path),
                    useCompression=compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    _raises_naming(path, r"cannot read MetaImage voxels \(corrupt or truncated file\?\)")


def test_files_that_are_not_what_their_suffix_says(tmp_path, phantom):
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(b"this is not a NRRD file" * 20)
    _raises_naming(junk, "not a NRRD file")
    nifti = write_nifti(tmp_path / "ct.nii", phantom, lps_affine(SPACING))
    disguised = tmp_path / "disguised.nrrd"
    disguised.write_bytes(nifti.read_bytes())
    _raises_naming(disguised, "not a NRRD file")
    junk_mha = tmp_path / "junk.mha"
    junk_mha.write_bytes(b"\x00\x01binary rubbish" * 30)
    _raises_naming(junk_mha, "not a MetaImage header")
    bad_header = tmp_path / "bad.nrrd"
    bad_header.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n" + b"\0" * 64)
    _raises_naming(bad_header, "cannot read NRRD header")


def test_2d_and_4d(tmp_path, phantom):
    flat = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(phantom[:, :, 0].T.astype(np.int16)), str(flat))
    _raises_naming(flat, r"3D volume, got a 2D image.*single slice")
    four = sitk.JoinSeries([sitk.GetImageFromArray(phantom.transpose(2, 1, 0))] * 2)
    path = tmp_path / "series.mha"
    sitk.WriteImage(four, str(path))
    _raises_naming(path, r"3D volume, got a 4D image of size \(40, 36, 24, 2\).*time series")


def test_vector_voxels(tmp_path, phantom):
    rgb = np.stack([phantom] * 3, axis=-1).astype(np.int16).transpose(2, 1, 0, 3)
    path = tmp_path / "colour.mha"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    _raises_naming(path, "3 values each")


def test_nan_and_non_ct_values(tmp_path, phantom):
    nan = phantom.copy()
    nan[3, 4, 5] = np.nan
    _raises_naming(write_nrrd(tmp_path / "nan.nrrd", nan, lps_directions(SPACING)), "1 voxels are NaN")
    rng = np.random.default_rng(0)
    mr = np.abs(rng.normal(300, 150, size=(32, 32, 16))).astype(np.float32)
    _raises_naming(write_nrrd(tmp_path / "t1.nrrd", mr, lps_directions(SPACING)), "look like MR")
    _raises_naming(write_nrrd(tmp_path / "norm.nrrd", (phantom / 1000).astype(np.float32),
                              lps_directions(SPACING)), "already normalised")


def test_no_anatomical_space_means_unknown_orientation(tmp_path, phantom):
    path = write_nrrd(tmp_path / "nospace.nrrd", phantom.astype(np.int16), lps_directions(SPACING), space=None)
    _raises_naming(path, "states no `space`.*orientation is unknown")
    np.testing.assert_array_equal(read_itk(path, reorient=False).hu, phantom)


def test_header_may_not_point_at_other_files(tmp_path, phantom):
    secret = tmp_path / "elsewhere" / "secret.raw"
    secret.parent.mkdir()
    secret.write_bytes(phantom.astype(np.int16).tobytes())
    folder = tmp_path / "case"
    folder.mkdir()
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 40 36 24\nElementType = MET_SHORT\n"
              "ElementSpacing = 0.8 0.7 2.5\nElementDataFile = {}\n")
    mha = folder / "a.mha"
    mha.write_text(header.format(secret))
    _raises_naming(mha, "separate data file.*must hold its own voxels")
    mhd = folder / "a.mhd"
    mhd.write_text(header.format("../elsewhere/secret.raw"))
    _raises_naming(mhd, "not beside the header")
    mhd.write_text(header.format("missing.raw"))
    _raises_naming(mhd, "'missing.raw' named by the header is missing")
    nrrd = write_nrrd(folder / "b.nrrd", phantom.astype(np.int16), lps_directions(SPACING),
                      extra=f"data file: {secret}\n")
    _raises_naming(nrrd, "separate data file")


def test_nifti_only_options_are_refused(tmp_path, phantom):
    path = write_nrrd(tmp_path / "ct.nrrd", phantom.astype(np.int16), lps_directions(SPACING))
    _raises_naming(path, r"options \['rescale'\] do not apply", rescale=(1.0, -1024.0))
