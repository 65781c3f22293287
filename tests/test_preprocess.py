"""Preprocessing: the fast path equals CT-CLIP's literal full-volume path; sizes, offsets, config."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ConfigError, VolumeError
from engine.preprocess import PreprocessConfig, apply_windows, preprocess, preprocess_array, preprocess_plain
from engine.volume import Volume

CASES = [
    # shape, spacing, target shape: crop and pad on different axes, upsampling and downsampling
    ((40, 30, 20), (1.5, 1.5, 3.0), (64, 48, 32)),
    ((37, 53, 29), (0.9, 0.6, 2.2), (30, 50, 40)),
    ((61, 47, 33), (0.5, 0.7, 1.0), (24, 40, 16)),
    ((37, 53, 29), (0.75, 0.75, 1.5), (30, 60, 40)),  # no resampling at all
]


@pytest.mark.parametrize("shape,spacing,target", CASES)
@pytest.mark.parametrize("clip_first", [True, False])
def test_fast_path_equals_plain_full_volume_path(shape, spacing, target, clip_first):
    rng = np.random.default_rng(sum(shape))
    hu = rng.uniform(-1400, 1600, size=shape).astype(np.float32)
    config = PreprocessConfig(shape_xyz=target, clip_before_resample=clip_first)
    fast = preprocess_array(hu, spacing, config)
    plain = preprocess_plain(hu, spacing, config)  # float64 F.interpolate on the whole volume
    assert fast.shape == plain.shape == (1, target[2], target[0], target[1])
    assert fast.dtype == torch.float32
    assert float((fast - plain).abs().max()) < 2e-6
    # int16 input and a negatively strided view go through the same path
    int_view = hu.astype(np.int16)[:, ::-1]
    diff = preprocess_array(int_view, spacing, config) - preprocess_plain(int_view, spacing, config)
    assert float(diff.abs().max()) < 2e-6


def test_plain_path_is_ctclip_trilinear():
    """The reference itself: one F.interpolate(trilinear, align_corners=False) call on (D, H, W)."""
    hu = np.random.default_rng(1).uniform(-900, 900, size=(12, 10, 8))
    config = PreprocessConfig(spacing_mm=(0.5, 0.5, 1.0), shape_xyz=(24, 20, 16))
    expected = F.interpolate(torch.from_numpy(hu.transpose(2, 0, 1))[None, None], size=(16, 24, 20),
                             mode="trilinear", align_corners=False)[0] / 1000
    assert float((preprocess_plain(hu, (1.0, 1.0, 2.0), config) - expected).abs().max()) < 1e-6


def test_size_truncates_like_ctclip():
    """CT-CLIP's new size is int(n * spacing / target): 25 slices at 1.25 mm give int(20.83) = 20 slices
    (round() would give 21), padded to 22 with one -1 slice before and one after."""
    hu = np.full((8, 8, 25), 40.0, dtype=np.float32)
    out = preprocess_array(hu, (0.75, 0.75, 1.25), PreprocessConfig(shape_xyz=(8, 8, 22)))[0]
    assert out.shape == (22, 8, 8)
    assert bool(torch.all(out[0] == -1)) and bool(torch.all(out[21] == -1))
    assert torch.allclose(out[1:21], torch.tensor(0.04))


def test_crop_and_pad_offsets_follow_ctclip():
    """No resampling (spacing equals the target): a centre crop that drops the extra voxel at the end
    ((n - t) // 2 before) and a pad that puts the extra -1 after ((t - n) // 2 before)."""
    hu = np.arange(11 * 5 * 4, dtype=np.float32).reshape(11, 5, 4) * 4 - 800
    out = preprocess_array(hu, (0.75, 0.75, 1.5), PreprocessConfig(shape_xyz=(8, 8, 4)))[0]
    expected = np.full((8, 8, 4), -1.0)
    expected[:, 1:6, :] = hu[1:9] / 1000  # x: 11 → 8 from index 1; y: 5 → 8 with 1 before, 2 after
    np.testing.assert_array_equal(out.numpy(), expected.transpose(2, 0, 1))


def test_default_config_gives_encoder_input():
    hu = np.random.default_rng(2).uniform(-1200, 2500, size=(64, 64, 32)).astype(np.float32)
    vol = Volume(hu=hu, spacing_mm=(5.625, 5.625, 11.25))  # exactly 480 × 480 × 240 after resampling
    out = preprocess(vol)
    assert out.shape == (1, 240, 480, 480) and out.dtype == torch.float32
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    assert float(out.min()) == -1 and float(out.max()) == 1  # clipped at both ends


def test_rejects_non_canonical_orientation_and_nan():
    hu = np.zeros((16, 16, 16), dtype=np.float32)
    with pytest.raises(VolumeError, match="not the encoder's LPS"):
        preprocess(Volume(hu=hu, spacing_mm=(1, 1, 1), source="scan.nii", axcodes=("R", "A", "S")))
    hu[3, 3, 3] = np.nan
    with pytest.raises(VolumeError, match="non-finite"):
        preprocess(Volume(hu=hu, spacing_mm=(1, 1, 1)))


def test_config_round_trip_and_fingerprint():
    config = PreprocessConfig()
    assert config.spacing_mm == (0.75, 0.75, 1.5) and config.shape_xyz == (480, 480, 240)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert PreprocessConfig.from_dict(config.to_dict()).fingerprint() == config.fingerprint()
    changed = [
        PreprocessConfig(spacing_mm=(0.75, 0.75, 1.0)),
        PreprocessConfig(hu_range=(-1000, 500)),
        PreprocessConfig(shape_xyz=(480, 480, 200)),
        PreprocessConfig(clip_before_resample=False),
    ]
    assert len({c.fingerprint() for c in changed} | {config.fingerprint()}) == 5
    with pytest.raises(ConfigError, match="unknown key .flip. in PreprocessConfig"):
        PreprocessConfig.from_dict({**config.to_dict(), "flip": True})
    with pytest.raises(ConfigError, match="spacing_mm"):
        PreprocessConfig(spacing_mm=(0.75, 0.0, 1.5))
    with pytest.raises(ConfigError, match="hu_range"):
        PreprocessConfig(hu_range=(1000, -1000))


def test_hu_windows_give_one_channel_each_and_leave_one_channel_configs_unchanged():
    rng = np.random.default_rng(4)
    hu = rng.uniform(-1100, 2800, (40, 36, 12)).astype(np.float32)
    hu[:20] = -900.0  # a block of 'lung' whose value each window should map exactly
    windows = ((-1350.0, 150.0), (-135.0, 215.0), (1000.0, 3000.0))
    cfg = PreprocessConfig(spacing_mm=(2.0, 2.0, 4.0), shape_xyz=(20, 18, 12), hu_range=(-1000.0, 3000.0),
                           windows=windows)
    x = preprocess_array(hu, (1.0, 1.0, 4.0), cfg)
    assert x.shape == (3, 12, 20, 18) and cfg.channels == 3
    torch.testing.assert_close(x, preprocess_plain(hu, (1.0, 1.0, 4.0), cfg), atol=1e-5, rtol=0)
    lung = x[:, :, 5]  # output row 5 reads input rows 10-11: the -900 HU block
    expected = [(-900 - lo) / ((hi - lo) / 2) - 1 for lo, hi in windows]
    for c, value in enumerate(expected):
        assert torch.allclose(lung[c], torch.tensor(max(-1.0, min(1.0, value))), atol=1e-5)
    assert (x >= -1).all() and (x <= 1).all()
    # Configs without windows keep the fingerprint they had before windows existed (caches stay valid).
    assert "windows" not in PreprocessConfig().to_dict() and PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.fingerprint() != PreprocessConfig(spacing_mm=(2.0, 2.0, 4.0), shape_xyz=(20, 18, 12),
                                                 hu_range=(-1000.0, 3000.0)).fingerprint()
    with pytest.raises(ConfigError, match="low < high"):
        PreprocessConfig(windows=((100.0, -100.0),))


def test_reference_channel_is_a_balanced_checkerboard_that_keeps_absolute_intensity_through_layernorm():
    windows = ((-1350.0, 150.0), (1000.0, 3000.0))
    cfg = PreprocessConfig(spacing_mm=(2.0, 2.0, 4.0), shape_xyz=(16, 16, 8), hu_range=(-1000.0, 3000.0),
                           windows=windows, reference_channel=4.0)
    assert cfg.channels == 3 and cfg.base.channels == 1 and cfg.base.hu_range == cfg.hu_range
    hu = np.random.default_rng(0).uniform(-1000, 2500, (16, 16, 8)).astype(np.float32)
    x = preprocess_array(hu, (2.0, 2.0, 4.0), cfg)
    assert x.shape == (3, 8, 16, 16)
    torch.testing.assert_close(x, preprocess_plain(hu, (2.0, 2.0, 4.0), cfg), atol=1e-5, rtol=0)
    ref = x[2]
    assert set(ref.unique().tolist()) == {-4.0, 4.0}
    assert ref[0, 0, 0] == 4.0 and ref[0, 0, 1] == -4.0 and ref[1, 0, 0] == -4.0 and ref[1, 1, 0] == 4.0
    # Even patches hold as many +A as -A voxels: the channel adds the same variance to every patch.
    assert float(ref[:4, :8, :8].sum()) == 0.0 and float(ref[4:, 8:, :8].sum()) == 0.0
    # The plain channel and the windows made from it batch-wise are what preprocessing gives.
    plain = preprocess_array(hu, (2.0, 2.0, 4.0), cfg.base)
    assert plain.shape == (1, 8, 16, 16)
    torch.testing.assert_close(apply_windows(plain[None].expand(2, -1, -1, -1, -1), cfg)[1], x)

    # Why it exists: CT-ViT LayerNorms each patch vector. Two patches that differ only by a uniform
    # +150 HU (soft tissue vs denser tissue of the same texture) normalise to the same vector
    # without the reference channel, and stay apart with it.
    def patch_vector(c, offset):
        p = apply_windows(plain[:, :4, :8, :8] * 0.05 + (offset - 1000) / 2000, c)
        return F.layer_norm(p.flatten(), (p.numel(),))

    plain_window = PreprocessConfig(hu_range=(-1000.0, 3000.0))
    assert torch.allclose(patch_vector(plain_window, 0.0), patch_vector(plain_window, 150.0), atol=1e-4)
    with_ref = PreprocessConfig(hu_range=(-1000.0, 3000.0), reference_channel=4.0)
    shift = (patch_vector(with_ref, 150.0) - patch_vector(with_ref, 0.0))[:4 * 8 * 8]  # the HU channel's part
    assert float(shift.min()) > 0.01  # denser patch -> every voxel higher: the offset survives, linearly
    assert float(shift.max() - shift.min()) < 0.2 * float(shift.mean())

    # Off by default, and configs without it keep their fingerprints (existing caches stay valid).
    assert "reference_channel" not in PreprocessConfig().to_dict()
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.fingerprint() != PreprocessConfig.from_dict({**cfg.to_dict(), "reference_channel": 2.0}).fingerprint()
    with pytest.raises(ConfigError, match="reference_channel"):
        PreprocessConfig(reference_channel=-1.0)
