"""The inference session and run directory, end to end on tiny models: a run written to disk and
loaded back computes exactly what its parts compute, and broken runs are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import CheckpointError, ConfigError
from engine.inference import InferenceSession
from engine.labels import ct_rate
from engine.preprocess import preprocess
from engine.rundir import open_run
from run_fixtures import SETTINGS, SMALL_GRID, THRESHOLDS, chest_like_volume  # noqa: F401


def test_loaded_run_reproduces_its_parts(tiny_run):
    root, encoder, classifier, generator = tiny_run
    session = InferenceSession.load(root, device="cpu")
    volume = chest_like_volume()
    result = session.report(volume)

    with torch.no_grad():
        latent = encoder(preprocess(volume, SMALL_GRID).unsqueeze(0))
        logits = classifier(latent)
        expected = generator.generate(latent, logits, session.tokenizer, SETTINGS)
    probs = torch.sigmoid(logits)[0].numpy()
    assert list(result.probabilities) == list(ct_rate().names)
    np.testing.assert_allclose(list(result.probabilities.values()), probs, atol=1e-6)
    assert result.positives == [n for n, p, t in zip(ct_rate().names, probs, THRESHOLDS) if p >= t]
    assert result.report == expected.texts[0] and result.report
    assert result.prefix.shape == (4, generator.config.connector.d_llm)
    assert set(result.timings) == {"load_s", "preprocess_s", "encode_s", "generate_s", "total_s"}


def test_logits_change_the_v3_prefix(tiny_run):
    root = tiny_run[0]
    session = InferenceSession.load(root, device="cpu")
    latent = torch.randn(1, 32)
    a = session.prefixes(latent, torch.zeros(1, 18))
    b = session.prefixes(latent, torch.full((1, 18), 4.0))
    assert not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="needs classifier logits"):
        session.prefixes(latent, None)


def test_batched_generation_from_cached_latents_matches_single(tiny_run):
    session = InferenceSession.load(tiny_run[0], device="cpu")
    torch.manual_seed(1)
    latents, logits = torch.randn(5, 32), torch.randn(5, 18)
    batch = session.generate(latents, logits).texts
    alone = [session.generate(latents[i : i + 1], logits[i : i + 1]).texts[0] for i in range(5)]
    assert batch == alone
    assert len(set(batch)) > 1, "different cases should give different reports"


def test_report_command_prints_probabilities_and_report(tiny_run, tmp_path, capsys):
    import nibabel as nib

    import cli

    volume = chest_like_volume(1)
    path = tmp_path / "case.nii.gz"
    stored = np.round(volume.hu).astype(np.int16)
    nib.save(nib.Nifti1Image(stored, np.diag([-3.0, -3.0, 5.0, 1.0])), path)
    assert cli.main(["report", str(path), "--run", str(tiny_run[0]), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["probabilities"]) == list(ct_rate().names)
    assert all(0.0 <= p <= 1.0 for p in out["probabilities"].values())
    assert isinstance(out["report"], str) and out["report"]
    assert cli.main(["report", str(path), "--run", str(tiny_run[0]), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "Pleural effusion" in text and "Findings (generated draft):" in text

    # CT-RATE-style raw values (HU + 1024): refused with one line, read right with --rescale
    raw = tmp_path / "raw.nii.gz"
    nib.save(nib.Nifti1Image(stored + np.int16(1024), np.diag([-3.0, -3.0, 5.0, 1.0])), raw)
    assert cli.main(["report", str(raw), "--run", str(tiny_run[0]), "--json", "--device", "cpu"]) == 1
    assert "no air near -1000 HU" in capsys.readouterr().err
    assert cli.main(["report", str(raw), "--run", str(tiny_run[0]), "--json", "--device", "cpu",
                     "--rescale", "1", "-1024"]) == 0
    rescaled = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(list(rescaled["probabilities"].values()), list(out["probabilities"].values()), atol=1e-5)


def test_incomplete_or_mismatched_runs_are_refused_by_name(tiny_run, tmp_path):
    import shutil

    root = tiny_run[0]
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "connector.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"missing: connector weights \(.*connector.safetensors\)"):
        open_run(broken)

    mismatched = tmp_path / "mismatched"
    shutil.copytree(root, mismatched)
    cfg = json.loads((mismatched / "config.json").read_text())
    cfg["generator"]["connector"]["n_layers"] = 3
    (mismatched / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="connector.safetensors"):
        InferenceSession.load(mismatched, device="cpu")

    with pytest.raises(ConfigError, match="config.json missing"):
        open_run(tmp_path)


def test_report_command_marks_findings_the_classifier_is_weak_on(tiny_run, tmp_path, capsys):
    """As the app does: a finding whose validation AUROC is below 0.7 carries ⚠ beside its
    probability, and --json lists the positives that rest on such findings."""
    import shutil

    import nibabel as nib

    import cli
    from engine.classifier import WEAK_AUROC

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    config = json.loads((run / "config.json").read_text())
    auroc = [0.55] * 9 + [0.95] * 9
    config["classifier"]["valid_auroc"] = auroc
    config["classifier"]["thresholds"] = [0.0] * 18  # every finding positive
    (run / "config.json").write_text(json.dumps(config))
    path = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.round(chest_like_volume(1).hu).astype(np.int16), np.diag([-3.0, -3.0, 5.0, 1.0])), path)
    assert cli.main(["report", str(path), "--run", str(run), "--device", "cpu"]) == 0
    lines = {line.split("  ")[0]: line for line in capsys.readouterr().out.splitlines()}
    for name, a in zip(ct_rate().names, auroc):
        assert ("⚠" in lines[name]) == (a < WEAK_AUROC), lines[name]
    assert cli.main(["report", str(path), "--run", str(run), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weak_findings"] == list(ct_rate().names[:9])


def test_report_stream_gives_each_stage_then_the_text_as_it_grows_then_the_case(tiny_run):
    """The steps the app shows: preprocess, encode, classify (probabilities, positives, domain),
    the text while greedy decoding writes it, and last the CaseReport that `report` returns."""
    from engine.inference import REPORT_STAGES

    session = InferenceSession.load(tiny_run[0], device="cpu")
    volume = chest_like_volume(4)
    steps = list(session.report_stream(volume))
    stages = [s.stage for s in steps]
    assert stages[:3] == list(REPORT_STAGES[:3]) and stages[-1] == REPORT_STAGES[-1]
    assert set(stages[3:-1]) == {"text"} and len(stages) > 5
    assert steps[0].probabilities is None and steps[1].probabilities is None
    assert steps[2].probabilities is not None and steps[2].domain is not None and steps[2].text == ""
    texts = [s.text for s in steps[3:-1]]
    assert all(b.startswith(a) and b != a for a, b in zip(texts, texts[1:]))  # each step adds text
    case = steps[-1].case
    assert case is not None and case.report == steps[-1].text == texts[-1].strip()
    again = session.report(volume)
    assert again.report == case.report and again.positives == steps[2].positives == case.positives
    assert again.n_tokens == case.n_tokens and again.finished == case.finished
    assert list(steps[0].timings) == ["load_s", "preprocess_s"] and list(steps[1].timings)[-1] == "encode_s"
    assert set(case.timings) == {"load_s", "preprocess_s", "encode_s", "generate_s", "total_s"}
