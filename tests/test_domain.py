"""The domain guard: a body-region check on the volume and a feature-space check on the latent."""

import numpy as np
import pytest

from engine.domain import BodyRegion, DomainCheck, FeatureGuard, body_region
from engine.synth.case import generate_case
from engine.synth.regions import REGIONS, _outside_body, generate_region
from engine.volume import Volume


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chest_phantoms_are_chest(seed):
    case = generate_case(seed, ["Pleural effusion", "Emphysema"] if seed == 1 else None, 4.0)
    region = body_region(Volume(case.hu, case.spacing))
    assert region.is_chest, region.reason
    assert region.lung_volume_ml > 1500 and region.lung_extent_mm > 150


@pytest.mark.parametrize("background", [0.0, -3024.0, -2048.0])
def test_chest_with_a_constant_background_is_still_chest(background):
    """A CT whose outside was stored as 0 HU (or a padding value) is judged by the body's values."""
    case = generate_case(3, None, 4.0)
    hu = case.hu.copy()
    hu[_outside_body(case.tissue)] = background
    region = body_region(Volume(hu, case.spacing))
    assert region.is_chest, region.reason


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("background", [None, 0.0, -3024.0])
def test_non_chest_regions_are_refused(region, background):
    volume = generate_region(region, seed=5, spacing_mm=(2.0, 2.0, 4.0), background_hu=background)
    verdict = body_region(volume)
    assert not verdict.is_chest
    assert "lungs in" in verdict.reason


def test_abdomen_reaches_the_lung_bases_but_is_not_chest():
    verdict = body_region(generate_region("abdomen", seed=1, spacing_mm=(2.0, 2.0, 4.0)))
    assert verdict.lung_extent_mm > 20  # the lung bases are seen ...
    assert not verdict.is_chest  # ... but over too few slices


def test_feature_guard_distance_is_the_mahalanobis_distance_of_the_shrunk_covariance():
    from scipy.spatial.distance import mahalanobis
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    guard = FeatureGuard.fit(train)
    lw = LedoitWolf().fit(train)
    z = rng.normal(size=(5, 16))
    expected = [mahalanobis(v, lw.location_, lw.precision_) for v in z]
    np.testing.assert_allclose(guard.distance(z), expected, rtol=1e-4)


def test_feature_guard_calibrates_on_valid_and_flags_far_latents():
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(32, 32))
    train, valid = rng.normal(size=(400, 32)) @ mix, rng.normal(size=(100, 32)) @ mix
    guard = FeatureGuard.fit(train).calibrate(valid, quantile=0.99, margin=1.0)
    assert guard.calibration["false_positive_rate"] == pytest.approx(np.mean(guard.distance(valid) > guard.threshold))
    assert guard.calibration["false_positive_rate"] <= 0.02
    shifted = rng.normal(size=(50, 32)) @ mix + 20 * mix[0]
    assert guard.outside(shifted).all()
    assert not guard.outside(train).mean() > 0.05


def test_feature_guard_round_trips_through_tensors():
    rng = np.random.default_rng(2)
    guard = FeatureGuard.fit(rng.normal(size=(50, 8))).calibrate(rng.normal(size=(20, 8)))
    again = FeatureGuard.from_tensors(guard.to_tensors(), guard.to_dict())
    z = rng.normal(size=(4, 8))
    np.testing.assert_allclose(again.distance(z), guard.distance(z), rtol=1e-5)
    assert again.threshold == guard.threshold and again.calibration == guard.calibration


def test_domain_check_message_names_both_reasons():
    body = BodyRegion(False, 0.0, 0.0, 0.0, 40, "lungs in 0% of the body's slices")
    check = DomainCheck(body, distance=50.0, threshold=20.0)
    assert not check.in_domain
    assert "not a chest CT" in check.message() and "50.0 > threshold 20.0" in check.message()
    ok = DomainCheck(BodyRegion(True, 0.7, 200.0, 4000.0, 60, "two lungs"), distance=3.0, threshold=20.0)
    assert ok.in_domain and ok.to_dict()["in_domain"]


@pytest.mark.parametrize("name", ["CTChest4.nrrd", "lung1_image.nrrd", "lung2_image.nrrd"])
def test_real_chest_cts_are_chest(name):
    from engine.io import load_volume
    from test_real_ct import real_ct

    verdict = body_region(load_volume(real_ct(name)))
    assert verdict.is_chest, verdict.reason


# -- wired into a run and the inference session ------------------------------------------------
from run_fixtures import chest_like_volume, write_tiny_run  # noqa: E402


@pytest.fixture(scope="module")
def guarded_run(tmp_path_factory, tiny_gpt2_dir):
    return write_tiny_run(tmp_path_factory.mktemp("guarded"), tiny_gpt2_dir)[0]


def test_session_refuses_a_head_before_encoding_and_marks_it_when_forced(guarded_run, monkeypatch):
    from engine.errors import OutOfDomainError
    from engine.inference import InferenceSession

    session = InferenceSession.load(guarded_run, device="cpu")
    head = generate_region("head", seed=1, spacing_mm=(3.0, 3.0, 5.0))
    calls = []
    monkeypatch.setattr(session.image, "preprocess", lambda v: calls.append(v))
    with pytest.raises(OutOfDomainError, match="not a chest CT"):
        session.report(head, refuse_outside=True)
    assert calls == [], "the body-region check refuses before the encoder runs"
    monkeypatch.undo()
    forced = session.report(head)
    assert forced.domain is not None and not forced.domain.in_domain and forced.report is not None
    assert session.report(chest_like_volume()).domain.in_domain


def test_run_guard_round_trips_and_flags_far_features(guarded_run):
    from engine.errors import OutOfDomainError
    from engine.inference import InferenceSession
    from engine.rundir import load_domain_guard, open_run, save_domain_guard

    session = InferenceSession.load(guarded_run, device="cpu")
    latent = session.image.features(chest_like_volume()).latent.numpy()
    near = FeatureGuard(mean=latent.astype(np.float32), whitening=np.eye(latent.size, dtype=np.float32), threshold=1.0,
                        calibration={"split": "valid", "cases": 3, "quantile": 0.995, "margin": 1.1,
                                     "false_positive_rate": 0.0})
    run = save_domain_guard(open_run(guarded_run), near)
    assert run.config.domain_guard.threshold == 1.0 and load_domain_guard(run).calibration["cases"] == 3
    result = InferenceSession.load(guarded_run, device="cpu").report(chest_like_volume(), refuse_outside=True)
    assert result.domain.in_domain and result.domain.distance < 1e-3

    far = FeatureGuard(mean=latent.astype(np.float32) + 5.0, whitening=near.whitening, threshold=1.0)
    save_domain_guard(open_run(guarded_run), far)
    with pytest.raises(OutOfDomainError, match="far from the training scans"):
        InferenceSession.load(guarded_run, device="cpu").report(chest_like_volume(), refuse_outside=True)


def test_shipped_demo_guard_keeps_unseen_chest_phantoms_and_flags_other_regions():
    """The embedded demo's guard (shipped with its runs) on phantoms it never saw: chest phantoms of
    new seeds stay inside; head, abdomen and pelvis fail both the body-region and the feature check."""
    from engine.image_model import open_image_model
    from engine.rundir import load_domain_guard, open_run
    from training.demo.shipped import SHIPPED_DIR

    guard = load_domain_guard(open_run(SHIPPED_DIR / "runs" / "v3", check=False))
    assert guard.calibration["split"] == "valid" and guard.calibration["false_positive_rate"] < 0.01
    image = open_image_model(SHIPPED_DIR / "image")

    def distance(volume):
        return float(guard.distance(image.encode(image.preprocess(volume)).numpy())[0])

    for seed in (90001, 90002, 90003):  # seeds outside the recipe's 1200 cases
        case = generate_case(seed, ["Pleural effusion"] if seed % 2 else None, 4.0)
        assert distance(Volume(case.hu, case.spacing)) < guard.threshold
    for region in REGIONS:
        volume = generate_region(region, seed=3)
        assert not body_region(volume).is_chest
        assert distance(volume) > guard.threshold, region


def test_the_app_marks_a_scan_outside_the_domain_and_says_nothing_inside():
    from ui.screens.common import domain_html

    outside = DomainCheck(BodyRegion(False, 0.0, 0.0, 0.0, 40, "lungs in 0% of the body's slices"), None, None)
    banner = domain_html(outside)
    assert "outside the model&#x27;s domain" in banner and "not a chest CT" in banner
    assert domain_html(DomainCheck(BodyRegion(True, 0.7, 200.0, 4000.0, 60, "two lungs"), 2.0, 9.0)) == ""
    assert domain_html(None) == ""
