"""The WebGL viewer's server side (ui/volume_viewer.py): the files it hands the browser are the case's
voxels in the right orientation, written once per volume, dropped when the cache moves on; an overlay
keeps its scale; bad overlays are refused with one line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from engine.io import read_nifti
from engine.volume import Volume
from ui.volume_viewer import ViewerFiles, overlay_uint8


def ct(shape=(20, 16, 12), spacing=(0.7, 0.8, 2.5), seed=0) -> Volume:
    hu = np.clip(np.random.default_rng(seed).normal(-300, 400, shape), -1024, 3000).astype(np.float32)
    hu[3, 4, 5] = 1500.0  # one marked voxel, to find again after the round trip
    return Volume(hu=np.rint(hu), spacing_mm=spacing)


def test_the_file_holds_the_case_in_canonical_order(tmp_path):
    volume = ct()
    files = ViewerFiles(tmp_path / "viewer")
    value = json.loads(files.value(volume, "case-a"))
    path = value["volume"].split("file=", 1)[1]
    assert path.endswith(".nii.gz") and len(path.rsplit("/", 1)[1]) == 32 + 7  # a random, unguessable name
    back = read_nifti(path)  # read and reoriented by the engine's reader: the same voxels, the same spacing
    assert back.shape == volume.shape and back.hu[3, 4, 5] == 1500.0
    np.testing.assert_array_equal(back.hu, volume.hu)
    np.testing.assert_allclose(back.spacing_mm, volume.spacing_mm, rtol=1e-6)
    assert value["shape"] == list(volume.shape) and value["jump"] is None and value["overlay"] is None


def test_each_volume_is_written_once_and_old_files_go(tmp_path):
    files = ViewerFiles(tmp_path, capacity=2)
    volumes = [ct(seed=i) for i in range(3)]
    first = json.loads(files.value(volumes[0], "a"))["volume"]
    assert json.loads(files.value(volumes[0], "a", jump=(1, 2, 3)))["volume"] == first  # scrolls, jumps: no rewrite
    assert files.writes == 1
    for v in volumes[1:]:
        files.value(v, "b")
    assert files.writes == 3 and len(list(tmp_path.glob("*.nii.gz"))) == 2  # the first case's file was dropped
    assert not (tmp_path / first.rsplit("/", 1)[1]).exists()


def test_overlay_keeps_its_scale_and_must_match_the_volume(tmp_path):
    volume = ct()
    evidence = np.zeros(volume.shape, np.float32)
    evidence[3, 4, 5] = 0.02
    evidence[10, 8, 6] = 0.01
    data, slope, shown = overlay_uint8(evidence)
    assert data.dtype == np.uint8 and data[3, 4, 5] == 255 and abs(data[10, 8, 6] * slope - 0.01) < slope
    assert shown == pytest.approx((0.001, 0.02))
    files = ViewerFiles(tmp_path)
    value = json.loads(files.value(volume, "a", overlay=evidence, jump=(3, 4, 5), colormap="hot", opacity=0.7))
    back = nib.load(value["overlay"].split("file=", 1)[1])  # not a CT, so not through the engine's reader
    assert nib.aff2axcodes(back.affine) == ("L", "P", "S")  # the volume's order: voxel (3, 4, 5) is the same place
    assert back.get_fdata()[3, 4, 5] == pytest.approx(0.02, rel=1e-3) and value["jump"] == [3, 4, 5]
    with pytest.raises(ValueError, match=r"overlay shape \(2, 2, 2\) differs from the volume's \(20, 16, 12\)"):
        files.value(volume, "a", overlay=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="colour map 'rainbow'"):
        files.value(volume, "a", colormap="rainbow")
