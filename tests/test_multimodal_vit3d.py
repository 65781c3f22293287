"""The multimodal system on M3D's image side: ViT3D patch tokens (the small fixture ViT, M3D's own
seeded weights) cached per volume with M3D's preprocessing, the spatial-pooling connector, the tiny
GPT-2; stages 1 and 2 on a few tiny phantoms' vqa.csv, then `rad3d ask` answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent / "fixtures" / "m3d"
SMALL = "m3d-small-fixture"  # token grid (4, 6, 8), hidden 64: pooled to 2 x 3 x 4 = 24 image tokens


def write_vit3d_image_model(root: Path) -> Path:
    """An image model whose encoder gives ViT3D patch tokens (M3D's preprocessing to the small grid)."""
    from safetensors.torch import save_file

    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.encoders import VIT3D_PATCHES, load_vit3d_config
    from engine.labels import ct_rate
    from engine.model_configs import PreprocessConfig
    from engine.rundir import ClassifierSpec, EncoderSpec, ImageModelConfig, save_image_model

    vit = load_vit3d_config(SMALL)
    labels = ct_rate()
    torch.manual_seed(0)
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=vit.n_patches * vit.hidden_size, n_labels=len(labels)))
    root.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(root / "classifier.safetensors"))
    save_image_model(root, ImageModelConfig(
        label_set=labels, preprocess=PreprocessConfig(shape_xyz=vit.image_size[::-1], recipe="m3d"),
        encoder=EncoderSpec(VIT3D_PATCHES, vit.to_dict(), str(FIXTURE / "small_state_dict.safetensors")),
        classifier=ClassifierSpec(head.config, "classifier.safetensors", [0.5] * len(labels))))
    return root


@pytest.fixture(scope="module")
def vit3d_runs(tmp_path_factory, tiny_gpt2_dir):  # noqa: F811
    from engine.embedding import embed_with_image_model
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset
    from training.configs import MultimodalTrainConfig
    from training.multimodal_recipe import train_multimodal

    root = tmp_path_factory.mktemp("vit3d-multimodal")
    data = write_dataset(SynthConfig(n=6, seed=0, scale=8.0), root / "data", progress=False)
    image = write_vit3d_image_model(root / "image")
    embed_with_image_model(data, root / "cache", image, workers=0, progress=False)
    common = dict(data=str(data), cache=str(root / "cache"), decoder=str(tiny_gpt2_dir), image_model=str(image),
                  connector="spatial-pooling", image_tokens=24, tasks=("vqa", "report"), batch_size=4, max_steps=3,
                  max_answer_tokens=8, lr=1e-2, lora_r=2, lora_dropout=0.0)
    one = train_multimodal(MultimodalTrainConfig(out=str(root / "stage1"), **common), progress=False)
    two = train_multimodal(MultimodalTrainConfig(out=str(root / "stage2"), stage=2, init_from=str(root / "stage1"),
                                                 **common), progress=False)
    text_only = train_multimodal(MultimodalTrainConfig(out=str(root / "text-only"), stage=2, image=False, **common),
                                 progress=False)
    return {"data": data, "image": image, "cache": root / "cache", "one": one, "two": two, "text_only": text_only}


def test_the_cache_holds_the_towers_patch_tokens_under_m3ds_preprocessing(vit3d_runs):
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.image_model import open_image_model

    cache = EmbeddingCache.open(vit3d_runs["cache"])
    image = open_image_model(vit3d_runs["image"])
    assert cache.identity.preprocess == image.preprocess_config.fingerprint()
    assert cache.identity.latent_dim == 192 * 64 and cache.identity.encoder.startswith("vit3d-patches")
    dataset = resolve(vit3d_runs["data"], section=None)
    case = dataset.cases[0]
    x = image.preprocess(dataset.load_volume(case.volume_name))
    assert x.shape == (1, 8, 24, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # M3D's [0, 1]
    tokens = image.encoder.patch_features(x[None])  # LaMed's tower: final norm, cls dropped
    assert torch.allclose(torch.from_numpy(cache.get(case.volume_name).latent).view(192, 64), tokens[0], atol=1e-6)


def test_both_stages_train_the_spatial_pooling_connector_and_ask_answers(vit3d_runs, capsys, tmp_path):
    import numpy as np

    from cli import main
    from conftest import lps_affine, write_nifti
    from engine.multimodal_run import open_multimodal_run
    from run_fixtures import chest_like_volume

    one, two = vit3d_runs["one"], vit3d_runs["two"]
    assert one.finished and two.finished
    run = open_multimodal_run(two.run)
    assert run.config.model.connector.kind == "spatial-pooling" and run.config.model.image_tokens == 24
    assert two.parameters["lora adapters"][0] > 0 and one.parameters["lora adapters"][0] == 0
    scan = write_nifti(tmp_path / "chest.nii.gz", chest_like_volume().hu.astype(np.int16), lps_affine((3.0, 3.0, 5.0)))
    code = main(["ask", str(scan), "--run", str(two.run), "Is there a lung nodule?",
                 "--choices", "Yes", "No", "Unclear", "Not assessed", "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Q: Is there a lung nodule? Choices: A. Yes B. No C. Unclear D. Not assessed" in out and "\nA: " in out


def test_spatial_pooling_needs_the_patch_encoder_and_its_token_count(vit3d_runs, tiny_gpt2_dir, tmp_path):  # noqa: F811
    from engine.errors import ConfigError
    from engine.rundir import load_image_model
    from training.configs import MultimodalTrainConfig
    from training.multimodal_recipe import build_multimodal_model

    cfg = MultimodalTrainConfig(data=str(vit3d_runs["data"]), cache=str(vit3d_runs["cache"]), decoder=str(tiny_gpt2_dir),
                                image_model=str(vit3d_runs["image"]), out=str(tmp_path), connector="spatial-pooling",
                                image_tokens=8)
    encoder = load_image_model(vit3d_runs["image"])[1].encoder
    with pytest.raises(ConfigError, match="--image-tokens must be 24"):
        build_multimodal_model(cfg, 192 * 64, 18, encoder=encoder)


def test_evaluate_vqa_and_report_beside_the_text_only_baseline(vit3d_runs, capsys, tmp_path):
    import pandas as pd

    from cli import main
    from engine.data import resolve
    from engine.multimodal_run import open_multimodal_run
    from engine.vqa import dataset_vqa

    baseline = open_multimodal_run(vit3d_runs["text_only"].run)
    assert baseline.config.image_features == "none" and baseline.config.model.image_tokens == 0
    assert vit3d_runs["text_only"].parameters["connector"][0] == 0  # nothing of the image side learns
    common = ["--data", str(vit3d_runs["data"]), "--cache", str(vit3d_runs["cache"]), "--split", "valid",
              "--no-bertscore", "--no-meteor", "--resamples", "50", "--max-new-tokens", "4", "--no-progress"]
    code = main(["evaluate", "--run", str(baseline.root), "--task", "vqa", "--out", str(tmp_path / "text"), *common])
    assert code == 0, capsys.readouterr().err
    code = main(["evaluate", "--run", str(vit3d_runs["two"].run), "--task", "vqa", "--out", str(tmp_path / "image"),
                 "--baseline", str(tmp_path / "text"), *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    items = dataset_vqa(resolve(vit3d_runs["data"], section=None))["valid"]
    predictions = pd.read_csv(tmp_path / "image" / "vqa_predictions.csv", keep_default_na=False)
    assert len(predictions) == len(items) and list(predictions["Question"]) == [i.question for i in items]
    table = pd.read_csv(tmp_path / "image" / "vqa_metrics.csv")
    closed = table[(table["metric"] == "accuracy") & (table["form"] == "closed")]
    assert (closed["ci_low"] <= closed["value"]).all() and (closed["value"] <= closed["ci_high"]).all()
    assert "| form | question type | image | text |" in out  # the side-by-side with the baseline
    code = main(["evaluate", "--run", str(vit3d_runs["two"].run), "--task", "report", "--limit", "2",
                 "--out", str(tmp_path / "report"), *common])
    assert code == 0, capsys.readouterr().err
    reports = pd.read_csv(tmp_path / "report" / "predictions.csv")
    assert len(reports) == 2 and set(reports["variant"]) == {"multimodal"}
    assert (tmp_path / "report" / "metrics.md").is_file()


def test_the_ask_box_streams_an_answer_and_names_the_choice(vit3d_runs, tmp_path):
    import numpy as np

    from conftest import lps_affine, write_nifti
    from engine.errors import ConfigError
    from engine.io import load_volume
    from engine.multimodal_session import MultimodalSession
    from run_fixtures import chest_like_volume
    from ui.screens.ask_box import answers_questions, ask_stream

    class Runs:
        runs = {"vqa": vit3d_runs["two"].run, "missing": tmp_path / "none"}

    assert answers_questions(Runs, "vqa") and not answers_questions(Runs, "missing")
    scan = write_nifti(tmp_path / "chest.nii.gz", chest_like_volume().hu.astype(np.int16), lps_affine((3.0, 3.0, 5.0)))
    session, volume = MultimodalSession.load(vit3d_runs["two"].run), load_volume(scan)
    shown = list(ask_stream(lambda: session, lambda: volume, "Is there a lung nodule?", ["Yes", "No", "", ""]))
    *_, last = session.answer_stream(volume, " Is there a lung nodule? Choices: A. Yes B. No")
    assert len(shown) >= 2 and shown[-1].startswith(f"**A:** {last.text}") and "**Chosen:**" in shown[-1]
    with pytest.raises(ConfigError, match="the question is empty"):
        list(ask_stream(lambda: session, lambda: volume, "  ", []))
