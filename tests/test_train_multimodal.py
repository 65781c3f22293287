"""Training the multimodal system on the one loop (training/multimodal_recipe.py): both stages learn,
stage 2 starts from stage 1's connector and changes only connector + adapters, resuming matches the
uninterrupted run, and the written run answers through `rad3d ask` / `rad3d report`."""

from __future__ import annotations

import json

import pytest
import torch

from engine.labels import ct_rate
from training.configs import MultimodalTrainConfig
from training_fixtures import SENTENCES, assert_same_training  # noqa: F401

FAST = dict(batch_size=4, image_tokens=4, lr=1e-2, max_answer_tokens=16, lora_r=4, lora_dropout=0.0)


def with_vqa(setup, root):
    """A copy of the tiny dataset with a vqa.csv: closed and open questions about the findings its reports name."""
    import shutil

    import pandas as pd

    from engine.vqa import VqaItem, write_vqa_csv

    data = shutil.copytree(setup["data"], root / "data")
    labels = pd.read_csv(data / "labels.csv")
    names = ct_rate().names
    choices = ("Yes", "No", "Unclear", "Not assessed")
    items = []
    for _, row in labels.iterrows():
        for k in (2, 17):  # cardiomegaly, hiatal hernia
            yes = bool(row[names[k]])
            items.append(VqaItem(row["VolumeName"], "presence", "closed", f"Is there {names[k].lower()}?", choices,
                                 "Yes" if yes else "No", "A" if yes else "B"))
        items.append(VqaItem(row["VolumeName"], "presence", "open", "Is the heart enlarged?", None,
                             "yes" if row[names[2]] else "no", None))
    write_vqa_csv(items, data / "vqa.csv")
    return {**setup, "data": data}


def config(setup, decoder, out, **overrides):
    return MultimodalTrainConfig(data=str(setup["data"]), cache=str(setup["cache"]), decoder=str(decoder),
                                 image_model=str(setup["image"]), out=str(out), **{**FAST, **overrides})


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory, training_setup, tiny_gpt2_dir, one_thread):  # noqa: F811
    """Stage 1 then stage 2 (report + vqa), a few epochs each on the tiny setup."""
    from training.multimodal_recipe import train_multimodal

    root = tmp_path_factory.mktemp("multimodal")
    setup = with_vqa(training_setup, root)
    both = dict(tasks=("report", "vqa"))
    one = train_multimodal(config(setup, tiny_gpt2_dir, root / "stage1", epochs=6, lr=3e-2, **both), progress=False)
    two = train_multimodal(config(setup, tiny_gpt2_dir, root / "stage2", epochs=2, stage=2,
                                  init_from=str(root / "stage1"), **both), progress=False)
    return one, two


def test_both_stages_lower_the_loss_and_write_runs(stage_runs, training_setup):
    import pandas as pd

    from engine.multimodal_run import open_multimodal_run, run_kind

    for result, stage in zip(stage_runs, (1, 2)):
        log = pd.read_csv(result.run / "metrics.csv")
        first, last = log["loss"].head(3).mean(), log["loss"].tail(3).mean()
        assert last < 0.8 * first, (stage, first, last)
        assert log["val_loss"].dropna().iloc[-1] < log["val_loss"].dropna().iloc[0]
        run = open_multimodal_run(result.run)
        assert run_kind(result.run) == "multimodal"
        assert (run.config.stage, run.config.tasks) == (stage, ("report", "vqa"))
        assert (run.config.lora is not None) == (stage == 2)
        assert run.config.notes["training"]["stage"] == stage
    merged = open_multimodal_run(stage_runs[1].run)
    assert merged.resolve(merged.config.decoder.path) == (stage_runs[1].run / "decoder").resolve()
    assert stage_runs[1].parameters["lora adapters"][0] > 0 and stage_runs[1].parameters["decoder"][0] == 0


def test_stage_2_starts_from_stage_1_and_keeps_the_decoder(stage_runs, tiny_gpt2_dir, training_setup, tmp_path):
    from safetensors.torch import load_file

    from engine.decoders import load_causal_lm
    from training.multimodal_recipe import build_multimodal_model

    one, two = stage_runs
    started = build_multimodal_model(config(training_setup, tiny_gpt2_dir, tmp_path, stage=2, init_from=str(one.run)),
                                     32, 18)[0]
    stage1 = load_file(str(one.run / "connector.safetensors"))
    for k, v in started.connector.state_dict().items():
        assert torch.equal(v, stage1[k])
    base, _ = load_causal_lm(tiny_gpt2_dir)  # the trained model's decoder base: bit-identical to the original
    trained_base = {k.replace(".base_layer", ""): v for k, v in two.model.decoder.get_base_model().state_dict().items()
                    if "lora_" not in k}
    assert trained_base.keys() == base.state_dict().keys()
    for k, v in base.state_dict().items():
        assert torch.equal(trained_base[k], v), k


def test_resumed_training_matches_the_uninterrupted_one(training_setup, tiny_gpt2_dir, tmp_path, one_thread):  # noqa: F811
    from training.multimodal_recipe import train_multimodal

    settings = dict(epochs=2, stage=2, eval_every_steps=3)  # 4 steps an epoch: cut inside the second
    train_multimodal(config(training_setup, tiny_gpt2_dir, tmp_path / "whole", **settings), progress=False)
    cut = config(training_setup, tiny_gpt2_dir, tmp_path / "cut", **settings)
    stopped = train_multimodal(cut, stop_at_step=6, progress=False)
    assert not stopped.finished and stopped.step == 6
    train_multimodal(cut, resume=True, progress=False)
    assert_same_training(tmp_path / "cut", tmp_path / "whole")


def test_bad_training_settings_are_one_line(training_setup, tiny_gpt2_dir, tmp_path):
    from engine.errors import ConfigError, DatasetError
    from training.multimodal_recipe import train_multimodal

    with pytest.raises(DatasetError, match="no vqa.csv"):  # the tiny dataset has none
        train_multimodal(config(training_setup, tiny_gpt2_dir, tmp_path, tasks=("vqa",)), progress=False)
    with pytest.raises(ConfigError, match="stage must be 1 or 2"):
        config(training_setup, tiny_gpt2_dir, tmp_path, stage=3)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    import numpy as np

    from conftest import lps_affine, write_nifti
    from run_fixtures import chest_like_volume

    return write_nifti(tmp_path_factory.mktemp("scan") / "chest.nii.gz",
                       chest_like_volume().hu.astype(np.int16), lps_affine((3.0, 3.0, 5.0)))


def _cli(capsys, *argv):
    from cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_streams_an_answer_and_names_the_chosen_letter(stage_runs, scan, capsys):
    code, out, err = _cli(capsys, "ask", str(scan), "--run", str(stage_runs[1].run), "Is there cardiomegaly?",
                          "--choices", "Yes", "No", "--max-new-tokens", "6")
    assert code == 0, err
    assert "Q: Is there cardiomegaly? Choices: A. Yes B. No" in out
    assert "\nA: " in out and "chosen: " in out
    code, out, err = _cli(capsys, "report", str(scan), "--run", str(stage_runs[1].run), "--max-new-tokens", "6")
    assert code == 0, err
    assert "Findings (generated draft):" in out and "multimodal stage 2" in out


def test_bad_questions_and_runs_are_one_line_before_any_model_loads(stage_runs, scan, capsys, tmp_path, monkeypatch):
    import shutil

    from engine.inference import InferenceSession
    from engine.multimodal_session import MultimodalSession

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(MultimodalSession, "load", no_model)
    run = stage_runs[1].run
    reports_only = shutil.copytree(stage_runs[0].run, tmp_path / "reports-only", ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((reports_only / "config.json").read_text())
    (reports_only / "config.json").write_text(json.dumps({**cfg, "tasks": ["report"]}))
    prefix_run = tmp_path / "prefix-run"
    prefix_run.mkdir()
    (prefix_run / "config.json").write_text(json.dumps({"format": "rad3d-run/1"}))
    cases = [
        ((str(scan), "--run", str(run), "   "), "the question is empty"),
        ((str(scan), "--run", str(run), "Is there a nodule? " * 200), "the question is too long: with the 4 image "
                                                                        "tokens it takes"),
        ((str(scan), "--run", str(reports_only), "Is there a nodule?"), "run reports-only was trained for report only"),
        ((str(scan), "--run", str(prefix_run), "Is there a nodule?"), "is a prefix run (RAD3D-Prefix)"),
        ((str(scan), "--run", str(run), "Is there a nodule?", "--choices", "Yes"), "takes 2 to 8 choices, got 1"),
        ((str(tmp_path / "missing.nii.gz"), "--run", str(run), "Is there a nodule?"), "missing.nii.gz"),
    ]
    for argv, expected in cases:
        code, out, err = _cli(capsys, "ask", *argv)
        assert code == 1 and out == "", argv
        assert len(err.strip().splitlines()) == 1 and expected in err, (argv, err)
    with pytest.raises(Exception, match="a multimodal .* run"):
        InferenceSession.load(run)


def test_session_batch_generation_matches_the_streamed_answer(stage_runs, scan, tmp_path):
    from engine.io import load_volume
    from engine.model_configs import GenerationSettings
    from engine.multimodal_session import MultimodalSession

    session = MultimodalSession.load(stage_runs[1].run)
    volume, settings = load_volume(scan), GenerationSettings(max_new_tokens=8)
    features = session.image.features(volume)
    instructions = [session.report_instruction(), " Is the heart enlarged?"]
    batch = session.generate(features.latent[None].repeat(2, 1), features.logits[None].repeat(2, 1), instructions,
                             settings)
    for i, instruction in enumerate(instructions):
        *_, answer = session.answer_stream(volume, instruction, settings)
        assert answer.text == batch.reports[i].text
    assert batch.reports[0].token_ids != batch.reports[1].token_ids  # the instruction steers the answer
