"""The shipped demo's thresholds: the project's rule applied to the shipped image model's valid-split
probabilities (stored beside it), the positives per case they give on the test split, and
`rad3d demo rethreshold`'s rewrite of a shipped folder, which an installed demo home takes up."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.classifier import choose_thresholds
from engine.errors import ConfigError
from engine.rundir import load_image_model, open_run
from training.demo.build import DemoPaths
from training.demo.rethreshold import PROBABILITIES, mean_positives, read_probabilities, rethreshold
from training.demo.shipped import SHIPPED_DIR, install_shipped, read_manifest


def shipped():
    manifest = read_manifest()
    _, image = load_image_model(SHIPPED_DIR / "image")
    return manifest, image, read_probabilities(SHIPPED_DIR / "image" / PROBABILITIES, image.label_set.names)


def test_the_shipped_thresholds_are_the_stated_rule_on_the_valid_probabilities():
    manifest, image, data = shipped()
    rule = manifest["thresholds"]
    assert rule["method"] == "youden-floor" and rule["min_specificity"] == 0.9
    _, probs, truth = data["valid"]
    assert probs.shape == truth.shape == (180, 18)
    expected = choose_thresholds(probs, truth, rule["method"], rule["min_specificity"]).tolist()
    assert image.classifier.thresholds == expected
    for variant in manifest["variants"]:
        assert open_run(SHIPPED_DIR / "runs" / variant, check=False).config.classifier.thresholds == expected
    specificity = ((probs < expected) & (truth == 0)).sum(0) / (truth == 0).sum(0)
    assert (specificity >= 0.9).all()
    assert rule["rule"] in (SHIPPED_DIR / "image" / "classifier_report.md").read_text().replace("\n", " ")
    # the image model carries its valid AUROC, so every positive on a near-chance finding shows its ⚠
    from engine.image_model import open_image_model

    model = open_image_model(SHIPPED_DIR / "image", with_encoder=False)
    weak = [n for n, a in model.valid_auroc.items() if a < 0.7]
    assert len(weak) == 13 and all(m.endswith(" ⚠") for m in model.marked(weak))


def test_the_shipped_thresholds_call_about_as_many_findings_per_test_case_as_are_there():
    # max-F1 thresholds called 11 findings positive per case against the truth's 4.6: most of them on
    # findings the classifier cannot tell apart. The rule calls fewer than are there (2.0: the
    # findings it cannot see are rarely called), and most of what it calls is there.
    _, image, data = shipped()
    _, probs, truth = data["test"]
    thresholds = image.classifier.thresholds
    called, present = mean_positives(probs, thresholds), truth.sum(1).mean()
    assert 0.3 * present <= called <= present
    hits = (probs >= np.asarray(thresholds)) & (truth == 1)
    assert hits.sum() / (probs >= np.asarray(thresholds)).sum() > 0.6
    f1 = choose_thresholds(data["valid"][1], data["valid"][2], "f1")
    assert mean_positives(probs, f1) > 1.5 * present


def test_rethreshold_rewrites_a_shipped_folder_that_an_installed_home_takes_up(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(SHIPPED_DIR, folder)
    home = DemoPaths(tmp_path / "home")
    install_shipped(home, read_manifest(folder), folder)
    before = open_run(home.run("v3"), check=False).config.classifier.thresholds

    _, image = load_image_model(folder / "image")
    data = read_probabilities(folder / "image" / PROBABILITIES, image.label_set.names)
    table = rethreshold(folder, data, image.label_set, min_specificity=0.75)
    valid = table[(table.split == "valid") & (table.name != "macro")]
    assert (valid.specificity >= 0.75).all()
    manifest = read_manifest(folder)
    assert manifest["thresholds"]["min_specificity"] == 0.75
    install_shipped(home, manifest, folder)  # the home installed from the earlier version is brought up to date
    after = open_run(home.run("v3"), check=False).config.classifier.thresholds
    assert after == valid.threshold.tolist() != before
    assert load_image_model(home.image)[1].classifier.thresholds == after
    assert np.all(np.array(after) <= np.array(before))  # a lower floor: never a higher threshold
    config = json.loads((folder / "runs" / "v2" / "config.json").read_text())
    assert config["notes"]["thresholds"]["min_specificity"] == 0.75
    install_shipped(DemoPaths(tmp_path / "fresh"), manifest, folder)  # and a fresh home installs it

    (home.image / "classifier_report.md").write_text("another build's report")
    with pytest.raises(ConfigError, match="holds another build"):
        install_shipped(home, manifest, folder)
