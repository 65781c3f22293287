"""AbnormalityHead, its class-weighted loss, thresholds and the per-class report."""

import math

import numpy as np
import pytest
import torch

from engine.classifier import (
    AbnormalityHead,
    AbnormalityHeadConfig,
    choose_thresholds,
    class_weighted_bce,
    classification_report,
    pos_weight_from_prevalence,
)
from engine.errors import ConfigError


def test_head_maps_latent_to_one_logit_per_label():
    linear = AbnormalityHead(AbnormalityHeadConfig())
    assert linear(torch.randn(4, 512)).shape == (4, 18)
    assert sum(p.numel() for p in linear.parameters()) == 512 * 18 + 18  # one classification layer
    mlp = AbnormalityHead(AbnormalityHeadConfig(in_dim=32, hidden=16, n_labels=5, dropout=0.1))
    assert mlp(torch.randn(2, 32)).shape == (2, 5)
    with pytest.raises(ConfigError):
        AbnormalityHeadConfig(n_labels=0)


def test_class_weighted_bce_matches_the_written_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g)
    y = (torch.rand(6, 3, generator=g) > 0.5).float()
    w = torch.tensor([1.0, 3.0, 0.5])
    by_hand = -(w * y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x))).mean()
    assert torch.allclose(class_weighted_bce(x, y, w), by_hand, atol=1e-6)
    # A positive weight > 1 makes a missed positive cost more than a false alarm of the same margin.
    missed = class_weighted_bce(torch.tensor([[-2.0]]), torch.tensor([[1.0]]), torch.tensor([4.0]))
    alarm = class_weighted_bce(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([4.0]))
    assert missed.item() == pytest.approx(4 * alarm.item(), rel=1e-6)


def test_pos_weight_is_negatives_over_positives_clamped():
    labels = np.zeros((10, 3), dtype=int)
    labels[:2, 0] = 1  # 2 positives, 8 negatives → 4
    labels[:8, 1] = 1  # 8 positives → 0.25, clamped up to 1
    # column 2 has no positives → max_weight
    w = pos_weight_from_prevalence(labels, max_weight=50.0)
    assert w.tolist() == pytest.approx([4.0, 1.0, 50.0])


def _separable_problem(n=200, seed=0):
    """Label j is positive exactly when latent feature j is positive, with a margin of 1 between the
    classes: a linear head can separate it."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 16)).astype(np.float32)
    latent[:, :3] += np.sign(latent[:, :3]) * 0.5
    labels = (latent[:, :3] > 0).astype(int)
    return torch.from_numpy(latent), labels


def test_trained_head_on_separable_data_gives_auroc_1_and_perfect_thresholds():
    latent, labels = _separable_problem()
    torch.manual_seed(0)
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=16, n_labels=3))
    optimiser = torch.optim.Adam(head.parameters(), lr=0.05)
    weights = pos_weight_from_prevalence(labels)
    targets = torch.from_numpy(labels).float()
    for _ in range(300):
        optimiser.zero_grad()
        class_weighted_bce(head(latent), targets, weights).backward()
        optimiser.step()
    probs = torch.sigmoid(head(latent)).detach().numpy()
    names = ["a", "b", "c"]
    for method in ("f1", "youden"):
        thresholds = choose_thresholds(probs, labels, method=method)
        report = classification_report(probs, labels, thresholds, names)
        per_class = report[report.name != "macro"]
        assert list(per_class.name) == names
        assert (per_class.auroc == 1.0).all()
        assert (per_class.f1 == 1.0).all() and (per_class.sensitivity == 1.0).all()
        assert (per_class.specificity == 1.0).all()
        assert report[report.name == "macro"].auroc.item() == 1.0


def test_report_counts_errors_at_the_given_threshold():
    probs = np.array([0.9, 0.8, 0.4, 0.3, 0.2, 0.6])
    labels = np.array([1, 1, 1, 0, 0, 0])
    report = classification_report(probs, labels, [0.5], ["x"]).iloc[0]
    # predicted positive: 0.9, 0.8, 0.6 → tp 2, fp 1, fn 1, tn 2
    assert report.sensitivity == pytest.approx(2 / 3)
    assert report.specificity == pytest.approx(2 / 3)
    assert report.f1 == pytest.approx(2 / 3)
    # AUROC: of 9 positive–negative pairs the positive ranks higher in 8 (only 0.4 < 0.6 fails)
    assert report.auroc == pytest.approx(8 / 9)


def test_a_label_with_one_value_has_nan_auroc_and_says_why():
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2]])
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    thresholds = choose_thresholds(probs, labels)
    assert thresholds[1] == 0.5  # nothing to choose from
    report = classification_report(probs, labels, thresholds, ["seen", "absent"])
    absent = report[report.name == "absent"].iloc[0]
    assert math.isnan(absent.auroc) and "only negatives" in absent.note
    assert math.isnan(absent.sensitivity) and absent.specificity == 1.0
    assert report[report.name == "macro"].auroc.item() == 1.0  # NaN skipped in the mean


def test_the_specificity_rule_takes_the_lowest_threshold_that_keeps_the_floor():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=(400, 3))
    probs = np.clip(rng.normal(0.4 + 0.2 * labels * np.array([0.2, 1.0, 2.0]), 0.15), 0, 1)
    for floor in (0.8, 0.9, 0.95):
        thresholds = choose_thresholds(probs, labels, method="specificity", min_specificity=floor)
        for j, t in enumerate(thresholds):
            negatives = probs[labels[:, j] == 0, j]
            assert (negatives < t).mean() >= floor  # the floor holds on these data
            lower = probs[:, j][probs[:, j] < t].max()  # the next cut below calls one more case positive
            assert (negatives < lower).mean() < floor
    # weakest label (near chance): max-F1 calls most cases positive, the floor at most a tenth of negatives
    weak_f1, weak_spec = (choose_thresholds(probs[:, :1], labels[:, :1], method=m)[0] for m in ("f1", "youden-floor"))
    negatives = probs[labels[:, 0] == 0, 0]
    assert (negatives >= weak_spec).mean() <= 0.1 < 0.5 < (negatives >= weak_f1).mean()


def test_an_unknown_threshold_method_or_floor_is_refused_by_name():
    from engine.errors import ConfigError
    from training.configs import ClassifierTrainConfig, EncoderTrainConfig

    probs, labels = np.array([[0.2], [0.8]]), np.array([[0], [1]])
    with pytest.raises(ConfigError, match="threshold method 'best'"):
        choose_thresholds(probs, labels, method="best")
    with pytest.raises(ConfigError, match="specificity floor"):
        EncoderTrainConfig(min_specificity=1.5)
    assert ClassifierTrainConfig().threshold_method == EncoderTrainConfig().threshold_method == "youden-floor"


def test_youden_within_the_floor_keeps_a_separable_finding_perfect_and_a_chance_one_negative():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=(300, 3))
    probs = np.stack([0.2 + 0.6 * labels[:, 0] + rng.uniform(0, 0.1, 300),  # separable
                      np.clip(rng.normal(0.4 + 0.15 * labels[:, 1], 0.15), 0, 1),  # weak
                      rng.uniform(0, 1, 300)], axis=1)  # chance
    chosen = choose_thresholds(probs, labels, method="youden-floor", min_specificity=0.9)
    report = classification_report(probs, labels, chosen, ["separable", "weak", "chance"]).set_index("name")
    assert report.loc["separable", ["sensitivity", "specificity"]].tolist() == [1.0, 1.0]
    # the lowest threshold within the floor would call a tenth of the separable finding's negatives positive
    lowest = choose_thresholds(probs, labels, method="specificity", min_specificity=0.9)
    assert 0.9 <= classification_report(probs, labels, lowest, ["s", "w", "c"]).specificity[0] < 0.92
    # on the weak finding: the best sensitivity + specificity among the cuts that keep the floor
    negatives, positives = probs[labels[:, 1] == 0, 1], probs[labels[:, 1] == 1, 1]
    cuts = [c for c in np.unique(probs[:, 1]) if (negatives < c).mean() >= 0.9]
    youden = [(positives >= c).mean() + (negatives < c).mean() - 1 for c in cuts]
    assert report.loc["weak", "specificity"] >= 0.9
    assert report.loc["weak", "sensitivity"] + report.loc["weak", "specificity"] - 1 == pytest.approx(max(youden))
    assert report.loc["chance", "sensitivity"] <= 0.15
