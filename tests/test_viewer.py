"""Viewer logic on volumes whose content is known: windowing, reslicing, aspect, letters."""

import numpy as np
import pytest

from ui.viewer import (
    ORIENTATION_LETTERS,
    WINDOW_PRESETS,
    Crosshair,
    clamp_crosshair,
    display_size,
    letter_size,
    pixel_spacing,
    plane_slice,
    render_plane,
    window,
)


def marked_volume():
    """A (L, P, S) volume with a bright voxel at the patient's left-anterior-superior corner."""
    hu = np.full((6, 8, 10), -1000.0, dtype=np.float32)
    hu[5, 0, 9] = 1000.0  # x max = most Left, y 0 = most Anterior, z max = most Superior
    return hu


def test_window_maps_level_and_edges():
    width, level = WINDOW_PRESETS["lung"]
    out = window(np.array([level - width / 2, level, level + width / 2, -3000, 3000]), width, level)
    assert out.tolist() == [0, 127, 255, 0, 255]
    with pytest.raises(ValueError):
        window(np.zeros(2), 0, 0)


@pytest.mark.parametrize(
    "plane, index, expected_rc",
    [
        ("axial", 9, (0, 5)),  # anterior on top row, patient left on the right edge
        ("coronal", 0, (0, 5)),  # superior on top row, left on the right
        ("sagittal", 5, (0, 0)),  # superior on top, anterior on the left
    ],
)
def test_planes_follow_radiological_convention(plane, index, expected_rc):
    img = plane_slice(marked_volume(), plane, index)
    rows, cols = np.nonzero(img > 0)
    assert (rows.tolist(), cols.tolist()) == ([expected_rc[0]], [expected_rc[1]])
    top, bottom, left, right = ORIENTATION_LETTERS[plane]
    # the marked voxel is Left-Anterior-Superior: check it sits on the edges those letters name
    if expected_rc[0] == 0:
        assert top in ("A", "S")
    if expected_rc[1] == img.shape[1] - 1:
        assert right == "L"
    if expected_rc[1] == 0:
        assert left == "A"


def test_aspect_ratio_from_spacing():
    spacing = (0.5, 0.5, 2.0)
    assert pixel_spacing(spacing, "coronal") == (2.0, 0.5)
    # 10 slices of 2 mm (20 mm) by 6 columns of 0.5 mm (3 mm): the image is tall
    w, h = display_size((10, 6), (2.0, 0.5), max_side=200)
    assert h == 200 and w == 30


def test_render_plane_draws_crosshair_and_has_square_pixels():
    hu = np.zeros((40, 40, 10), dtype=np.float32)
    image = render_plane(hu, (1.0, 1.0, 4.0), "coronal", Crosshair(20, 20, 5), 400, 40, max_side=160)
    assert image.size == (160, 160)  # 40 mm wide, 40 mm tall
    arr = np.asarray(image)
    yellow = (arr[..., 0] > 200) & (arr[..., 1] > 150) & (arr[..., 2] < 80)
    band = letter_size(image.size) + 6  # the edge letters are drawn over the line ends
    assert yellow[band:-band].any(axis=1).all()  # a vertical line through every row
    assert yellow.sum(axis=1).max() >= 160 - 2 * band  # and a horizontal one across
    with pytest.raises(IndexError):
        plane_slice(hu, "axial", 10)


def _letter_pixels(image):
    arr = np.asarray(image).astype(int)
    return (arr[..., 0] < 60) & (arr[..., 1] > 200) & (arr[..., 2] > 200)  # the letters' cyan


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_orientation_letters_sit_on_their_edges_and_are_legible(plane):
    hu = np.zeros((50, 40, 30), dtype=np.float32)
    image = render_plane(hu, (1.0, 1.0, 2.0), plane, Crosshair(25, 20, 15), 400, 40, max_side=400,
                         show_crosshair=False)
    cyan = _letter_pixels(image)
    h, w = cyan.shape
    band = letter_size((w, h)) + 6
    regions = {"top": cyan[:band, w // 3: 2 * w // 3], "bottom": cyan[-band:, w // 3: 2 * w // 3],
               "left": cyan[h // 3: 2 * h // 3, :band], "right": cyan[h // 3: 2 * h // 3, -band:]}
    for edge, region in regions.items():
        rows = np.nonzero(region.any(axis=1))[0]
        assert rows.size, f"no letter on the {edge} edge of {plane}"
        assert rows.max() - rows.min() + 1 >= 9, f"{edge} letter of {plane} is too small to read"
    assert cyan[band:-band, band:-band].sum() == 0  # nothing drawn in the image's middle
    assert letter_size((w, h)) >= 14


@pytest.mark.parametrize("plane, expected", [("axial", (400, 320)), ("coronal", (400, 240)),
                                             ("sagittal", (320, 240))])
def test_every_plane_keeps_the_physical_aspect(plane, expected):
    # 50 x 40 x 30 voxels of 1 x 1 x 2 mm: 50 mm (x) by 40 mm (y) by 60 mm (z)
    hu = np.zeros((50, 40, 30), dtype=np.float32)
    image = render_plane(hu, (1.0, 1.0, 2.0), plane, Crosshair(0, 0, 0), 400, 40, max_side=400)
    w, h = image.size
    extent = {"axial": (50, 40), "coronal": (50, 60), "sagittal": (40, 60)}[plane]  # (width, height) mm
    assert abs(w / h - extent[0] / extent[1]) < 0.01
    assert max(w, h) == 400


def test_crosshair_is_clamped_into_the_volume():
    assert clamp_crosshair((10, 20, 30), -5, 25, 29.7) == Crosshair(0, 19, 29)
