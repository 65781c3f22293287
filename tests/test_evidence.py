"""Evidence maps: gradient × input through a real (tiny) CT-ViT image model is zero exactly where
the volume cannot move the logit; on a phantom, a model that detects its planted object has its
map's peak inside the object (the mask regenerated from the seeds); the cache gives the same map
without recomputing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
from engine.image_model import ImageModel
from engine.labels import ct_rate
from engine.preprocess import PreprocessConfig
from engine.volume import Volume

# The fixture CT-ViT takes (B, 1, 20, 48, 48): a 360 x 360 x 300 mm field of view on this grid.
SMALL_GRID = PreprocessConfig(spacing_mm=(7.5, 7.5, 15.0), shape_xyz=(48, 48, 20))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A forward this small gains nothing from two threads, and they stall on each other when the
    CPU is shared (7.5 s instead of 1 s per pass, seen with 8 test runs on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model():
    from engine.encoders import ENCODERS

    torch.manual_seed(0)
    encoder = ENCODERS.build("ctvit", "ctclip-small-fixture")
    torch.nn.init.normal_(encoder.visual_transformer.vq._codebook.embed)  # a codebook that varies
    classifier = AbnormalityHead(AbnormalityHeadConfig(in_dim=encoder.cfg.dim_latent, n_labels=18))
    return ImageModel(encoder, classifier, preprocess=SMALL_GRID, label_set=ct_rate(),
                      thresholds=np.full(18, 0.5)).eval()


def wide_volume(seed: int = 0) -> Volume:
    """450 mm wide (x): preprocessing's centre crop to 360 mm leaves ~45 mm at each side unread."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(-300, 400, (150, 100, 50)).astype(np.float32)
    return Volume(hu=hu, spacing_mm=(3.0, 3.0, 6.0), source="wide")


def test_gradient_map_has_the_volume_shape_and_is_zero_where_the_input_cannot_reach(tiny_model):
    from engine.evidence import evidence_maps, peak_voxel, to_volume_grid

    volume = wide_volume()
    x = tiny_model.preprocess(volume)
    (m,) = evidence_maps(tiny_model, x, ["Pleural effusion"], "gradient")
    assert m.input_map.shape == (20, 48, 48) and m.input_map.max() == 1.0
    vm = to_volume_grid(m.input_map, volume.shape, volume.spacing_mm, SMALL_GRID)
    assert vm.shape == volume.shape
    # The side columns are outside the crop: changing them leaves the logit as it was, and the map is 0 there.
    changed = Volume(volume.hu.copy(), volume.spacing_mm)
    changed.hu[:10] += 500.0
    changed.hu[-10:] -= 500.0
    logit = tiny_model.classify(tiny_model.encode(tiny_model.preprocess(changed)))[0, ct_rate().names.index("Pleural effusion")]
    assert float(logit) == pytest.approx(m.logit, abs=1e-5)
    assert not vm[:10].any() and not vm[-10:].any()
    assert (vm[30:120] > 0).mean() > 0.5  # where the model reads, the map is mostly non-zero
    assert 10 <= peak_voxel(vm)[0] < 140


class MetalDetector(nn.Module):
    """A constructed image model's encoder: the strongest local mass of voxels above 2000 HU (on a
    [-1000, 3000] HU input), so every finding's logit grows with the densest metal blob."""

    def forward(self, x):
        hu = x[:, 0] * 2000.0 + 1000.0
        metal = torch.relu(hu - 2000.0) / 1000.0
        local = nn.functional.avg_pool3d(metal.unsqueeze(1), 3, stride=1, padding=1)
        return local.flatten(1).amax(1, keepdim=True)


def test_peak_lands_inside_the_planted_object_of_a_phantom():
    from engine.evidence_cache import evidence_for
    from engine.synth.case import generate_case
    from engine.synth.masks import finding_masks

    findings = {"Medical material": {"kind": "pacemaker"}, "Pleural effusion": {"side": "right"}}
    case = generate_case(3, findings, 8.0)
    masks = finding_masks(3, findings, 8.0)
    assert set(masks) == {"Medical material", "Pleural effusion"}
    for mask in masks.values():
        assert mask.shape == case.hu.shape and mask.any() and mask.mean() < 0.1
    assert not (masks["Medical material"] & masks["Pleural effusion"]).any()
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=1, n_labels=18))
    nn.init.ones_(head.out.weight)
    config = PreprocessConfig(spacing_mm=(6.0, 6.0, 12.0), hu_range=(-1000.0, 3000.0), shape_xyz=(64, 64, 32))
    model = ImageModel(MetalDetector(), head, preprocess=config, label_set=ct_rate(), thresholds=np.full(18, 0.5))
    overlay = evidence_for(model, Volume(case.hu, case.spacing), "Medical material")
    assert overlay.volume_map.shape == case.hu.shape
    assert masks["Medical material"][overlay.peak]
    assert not masks["Pleural effusion"][overlay.peak]


def test_the_cache_returns_the_same_map_without_recomputing(tiny_model, tmp_path):
    from engine.evidence_cache import EvidenceCache, evidence_for

    volume = wide_volume(1)
    first = EvidenceCache(tmp_path)
    a = evidence_for(tiny_model, volume, "Emphysema", first)
    assert first.computed == 1
    again = EvidenceCache(tmp_path)  # a new process: the files alone
    b = evidence_for(tiny_model, volume, "Emphysema", again)
    assert again.computed == 0 and b.peak == a.peak and b.logit == pytest.approx(a.logit)
    np.testing.assert_allclose(b.volume_map, a.volume_map, atol=1e-3)
    other = Volume(volume.hu + 1.0, volume.spacing_mm)  # another volume is another entry
    evidence_for(tiny_model, other, "Emphysema", again)
    assert again.computed == 1


def test_rollout_weights_the_tokens_the_head_reads(tiny_model):
    from engine.evidence import evidence_maps

    x = tiny_model.preprocess(wide_volume(2))
    maps = evidence_maps(tiny_model, x, ["Emphysema", "Cardiomegaly"], "rollout")
    assert [m.input_map.shape for m in maps] == [(20, 48, 48)] * 2
    assert all(m.input_map.max() == pytest.approx(1.0) and m.input_map.min() >= 0 for m in maps)
    assert not np.allclose(maps[0].input_map, maps[1].input_map)  # findings read different tokens
    with pytest.raises(Exception, match="unknown finding"):
        evidence_maps(tiny_model, x, ["Not a finding"], "rollout")
