"""Image-model training: the classifier head on cached latents (`rad3d train-classifier`) and the demo
encoder + head trained end to end on phantoms (`rad3d train-encoder`)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import cli
from conftest import lps_affine, write_nifti
from engine.cache import EmbeddingCache
from engine.classifier import AbnormalityHead, AbnormalityHeadConfig, pos_weight_from_prevalence
from engine.embedding import identity_for
from engine.encoders import ENCODERS, load_encoder_config
from engine.encoders.checkpoint import load_ctclip_vision, save_encoder_weights
from engine.errors import ConfigError, DatasetError
from engine.labels import ct_rate
from engine.preprocess import PreprocessConfig, preprocess
from engine.rundir import load_image_model
from training.classifier_recipe import ClassifierTrainConfig, fit_abnormality_head
from training.configs import EncoderTrainConfig
from training.encoder_recipe import train_encoder

LABELS = ct_rate().names
TINY_ENCODER = {"dim": 32, "codebook_size": 64, "image_size": 32, "patch_size": 8, "temporal_patch_size": 4,
                "spatial_depth": 1, "temporal_depth": 1, "dim_head": 8, "heads": 2, "dim_latent": 32,
                "num_slices": 16}
TINY_GRID = {"spacing_mm": [12.0, 12.0, 24.0], "shape_xyz": [32, 32, 16]}  # a 384 mm cube


# ---------------------------------------------------------------------------------------------
# train-classifier on cached latents


def _labelled_folder(root: Path, labels: np.ndarray, splits: list[str]) -> list[str]:
    """A CT-RATE-format dataset whose volumes are tiny placeholder NIfTIs (the classifier never
    reads volumes, only the dataset's labels and splits)."""
    names = [f"train_{i + 1}_a_1.nii.gz" for i in range(len(labels))]
    (root / "volumes").mkdir(parents=True)
    for n in names:
        write_nifti(root / "volumes" / n, np.zeros((2, 2, 2), np.int16), lps_affine((1.0, 1.0, 1.0)))
    pd.DataFrame({"VolumeName": names, "Findings_EN": "x", "Impressions_EN": "y"}).to_csv(root / "reports.csv", index=False)
    table = pd.DataFrame(labels.astype(int), columns=list(LABELS))
    table.insert(0, "VolumeName", names)
    table.to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"VolumeName": names, "split": splits}).to_csv(root / "splits.csv", index=False)
    return names


@pytest.fixture
def planted(tmp_path):
    """Latents with planted structure: finding j shifts the latent along its own direction, so a
    linear head can find it through noise; prevalence differs per finding (5%..50%)."""
    rng = np.random.default_rng(0)
    n, d = 360, 32
    prevalence = np.linspace(0.05, 0.5, len(LABELS))
    labels = (rng.random((n, len(LABELS))) < prevalence).astype(np.float32)
    directions = rng.normal(size=(len(LABELS), d))
    latents = rng.normal(size=(n, d)) + 1.5 * labels @ directions / np.sqrt(d) * 3
    latents = (latents / np.linalg.norm(latents, axis=1, keepdims=True)).astype(np.float32)  # unit norm, as CT-CLIP's
    splits = ["train"] * 240 + ["valid"] * 60 + ["test"] * 60
    data = tmp_path / "data"
    names = _labelled_folder(data, labels, splits)

    weights = tmp_path / "encoder.safetensors"
    save_encoder_weights(ENCODERS.build("ctvit", TINY_ENCODER), weights)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_ENCODER))
    (tmp_path / "grid.json").write_text(json.dumps(TINY_GRID))
    pp = PreprocessConfig.from_dict(TINY_GRID)
    cache = EmbeddingCache.create_or_open(tmp_path / "cache", identity_for(
        "ctvit", load_encoder_config(TINY_ENCODER).to_dict(), weights, pp, d))
    for name, z in zip(names, latents):
        cache.put(name, z)
    args = ["--cache", str(tmp_path / "cache"), "--data", str(data), "--encoder", str(weights),
            "--encoder-config", str(tmp_path / "tiny.json"), "--preprocess", str(tmp_path / "grid.json")]
    return {"root": tmp_path, "names": names, "latents": latents, "labels": labels, "args": args, "data": data}


def test_train_classifier_learns_planted_findings_and_writes_logits_into_the_cache(planted, capsys):
    out = planted["root"] / "image"
    assert cli.main(["train-classifier", *planted["args"], "--out", str(out), "--epochs", "200"]) == 0

    report = pd.read_csv(out / "classifier_report.csv")
    macro = report[report.name == "macro"].set_index("split").auroc
    assert macro["valid"] > 0.95 and macro["test"] > 0.95, macro
    assert set(report.split) == {"valid", "test"}
    assert "| Lung nodule |" in (out / "classifier_report.md").read_text()

    # The image model loads back, names the encoder the cache was made with, and its head
    # reproduces the logits written into the cache from the raw (unit-norm) latents.
    root, cfg = load_image_model(out)
    assert Path(cfg.encoder.weights) == (planted["root"] / "encoder.safetensors").resolve()
    assert len(cfg.classifier.thresholds) == len(LABELS)
    valid = report[report.split == "valid"].set_index("name").auroc
    assert cfg.classifier.valid_auroc == pytest.approx([valid[n] for n in LABELS])  # per finding, label order
    head = AbnormalityHead(cfg.classifier.config)
    head.load_state_dict(load_file(cfg.classifier.weights))
    with torch.no_grad():
        expected = head(torch.from_numpy(planted["latents"])).numpy()
    cache = EmbeddingCache.open(planted["root"] / "cache")
    _, cached = cache.stack(planted["names"], with_logits=True)
    np.testing.assert_allclose(cached, expected, atol=1e-5)
    assert cache.identity.label_set == "ct-rate" and "classifier.safetensors" in cache.identity.classifier
    assert "macro AUROC valid" in capsys.readouterr().out
    # Provenance: the dataset it was trained on, and the bare weights file it was given.
    from engine.provenance import describe_dataset, file_sha256

    assert cfg.provenance.data == (describe_dataset(planted["data"]),)
    assert (cfg.provenance.encoder.file, cfg.provenance.encoder.sha256) == ("encoder.safetensors",
                                                                            file_sha256(cfg.encoder.weights))


def test_positive_weights_from_prevalence_are_really_used():
    """On latents that carry no information the best constant prediction is the prevalence p with
    plain BCE, but 0.5 with pos_weight = (1 - p) / p: the weighted fit must land near 0.5."""
    rng = np.random.default_rng(1)
    y = torch.from_numpy((rng.random((400, 3)) < np.array([0.1, 0.2, 0.4])).astype(np.float32))
    x = torch.from_numpy(rng.normal(size=(400, 8)).astype(np.float32))
    cfg = ClassifierTrainConfig(epochs=150, lr=3e-2, patience=150, batch_size=400)
    weighted = fit_abnormality_head(x[:300], y[:300], x[300:], y[300:], cfg, progress=False)
    plain = fit_abnormality_head(x[:300], y[:300], x[300:], y[300:], cfg, pos_weight=torch.ones(3), progress=False)
    assert torch.allclose(weighted.pos_weight, pos_weight_from_prevalence(y[:300].numpy()))
    with torch.no_grad():
        p_weighted = torch.sigmoid(weighted.head(x[:300])).mean(0)
        p_plain = torch.sigmoid(plain.head(x[:300])).mean(0)
    prevalence = y[:300].mean(0)
    assert torch.allclose(p_plain, prevalence, atol=0.06), (p_plain, prevalence)
    assert torch.allclose(p_weighted, torch.full((3,), 0.5), atol=0.08), p_weighted


def test_train_classifier_names_the_cases_the_cache_lacks(planted, capsys):
    cache = planted["root"] / "cache" / "entries"
    for name in planted["names"][250:252]:  # two valid cases
        (cache / f"{name}.safetensors").unlink()
    assert cli.main(["train-classifier", *planted["args"], "--out", str(planted["root"] / "image")]) == 1
    err = capsys.readouterr().err
    assert "lacks 2 requested case(s)" in err
    assert planted["names"][250] in err and planted["names"][251] in err
    assert not (planted["root"] / "image" / "image_model.json").exists()


def test_train_classifier_refuses_label_columns_that_disagree(planted, capsys):
    labels = planted["data"] / "labels.csv"
    table = pd.read_csv(labels).rename(columns={"Emphysema": "Emphysema (CT)"})
    table.to_csv(labels, index=False)
    assert cli.main(["train-classifier", *planted["args"], "--out", str(planted["root"] / "image")]) == 1
    err = capsys.readouterr().err
    assert "lacks label columns ['Emphysema']" in err and "Emphysema (CT)" in err


def test_train_classifier_refuses_an_empty_split_and_another_encoders_cache(planted, capsys):
    splits = planted["data"] / "splits.csv"
    table = pd.read_csv(splits)
    table.loc[table.split == "test", "split"] = "valid"
    table.to_csv(splits, index=False)
    assert cli.main(["train-classifier", *planted["args"], "--out", str(planted["root"] / "image")]) == 1
    assert "the 'test' split is empty" in capsys.readouterr().err

    other = planted["root"] / "other.safetensors"
    save_encoder_weights(ENCODERS.build("ctvit", TINY_ENCODER), other)  # new random weights
    args = list(planted["args"])
    args[args.index("--encoder") + 1] = str(other)
    assert cli.main(["train-classifier", *args, "--out", str(planted["root"] / "image")]) == 1
    assert "not made with the given encoder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# train-encoder on tiny phantoms


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from engine.synth.config import SynthConfig
    from engine.synth.writer import write_dataset

    root = tmp_path_factory.mktemp("phantoms") / "data"
    write_dataset(SynthConfig(n=14, seed=3, scale=8, prevalence={n: 0.4 for n in LABELS}),
                  root, progress=False)
    return root


def _tiny_config(tmp: Path, **kw) -> EncoderTrainConfig:
    path = tmp / "tiny.json"
    path.write_text(json.dumps(TINY_ENCODER))
    base = dict(encoder_config=str(path), preprocess=TINY_GRID, epochs=8, vq_epochs=1, batch_size=4,
                lr=3e-3, warmup_steps=2, kmeans_tokens=4000, kmeans_iters=5, seed=0,
                shift_voxels=(0, 0, 0), intensity_jitter=0.0)
    return EncoderTrainConfig(**{**base, **kw})


def _steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]


def test_train_encoder_learns_saves_ctclip_weights_and_resumes_after_a_crash(phantoms, tmp_path):
    config = _tiny_config(tmp_path)
    full = train_encoder(phantoms, tmp_path / "full", config, workers=0, progress=False,
                         cache_out=tmp_path / "cache")
    log = pd.read_csv(tmp_path / "full" / "metrics.csv").dropna(subset=["loss"])
    per_epoch = log.groupby("epoch").loss.mean()
    assert per_epoch.iloc[config.epochs - 1] < 0.7 * per_epoch.iloc[0], per_epoch  # the training loss falls
    assert _steps(tmp_path / "full") == list(range(1, full.steps + 1))

    # The encoder file loads strictly into a fresh CT-ViT of the config, and image model +
    # preprocessing + the unchanged inference path reproduce the logits written to the cache.
    root, cfg = load_image_model(tmp_path / "full")
    with torch.device("meta"):
        encoder = ENCODERS.build(cfg.encoder.name, cfg.encoder.config)
    load_ctclip_vision(encoder, cfg.encoder.weights, strict=True)
    codebook = encoder.visual_transformer.vq._codebook
    assert codebook.initted.item() == 1 and (codebook.cluster_size > 0).sum() > 1  # fitted, not random
    head = AbnormalityHead(cfg.classifier.config)
    head.load_state_dict(load_file(cfg.classifier.weights))
    from engine.data import CTRateDataset

    dataset = CTRateDataset.open(phantoms)
    name = dataset.split("test")[0].volume_name
    x = preprocess(dataset.load_volume(name), PreprocessConfig.from_dict(cfg.preprocess))
    with torch.no_grad():
        logits = head(encoder.eval()(x[None]))[0].numpy()
    cached = EmbeddingCache.open(tmp_path / "cache").get(name).logits
    np.testing.assert_allclose(logits, cached, atol=1e-4)
    report = pd.read_csv(tmp_path / "full" / "classifier_report.csv")
    assert set(report.split) == {"valid", "test"}
    # Provenance: trained on these phantoms by rad3d; the cache it filled says the same.
    from engine.provenance import describe_dataset, file_sha256

    assert cfg.provenance.data == (describe_dataset(phantoms),) and cfg.provenance.synthetic_only
    assert cfg.provenance.encoder.origin == "rad3d train-encoder"
    assert cfg.provenance.encoder.sha256 == file_sha256(cfg.encoder.weights)
    assert EmbeddingCache.open(tmp_path / "cache").provenance == cfg.provenance

    # A run killed mid-epoch resumes from its last checkpoint and ends where the full run ended.
    class Crash(Exception):
        pass

    def crash_at(step):
        if step == full.steps - 2:
            raise Crash

    with pytest.raises(Crash):
        train_encoder(phantoms, tmp_path / "crashed", config, workers=0, progress=False, on_step=crash_at)
    with pytest.raises(ConfigError, match="--resume"):
        train_encoder(phantoms, tmp_path / "crashed", config, workers=0, progress=False)
    resumed = train_encoder(phantoms, tmp_path / "crashed", config, workers=0, progress=False, resume=True)
    assert resumed.steps == full.steps
    assert _steps(tmp_path / "crashed") == list(range(1, full.steps + 1))  # each step logged once
    a = load_file(str(tmp_path / "full" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "encoder.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)

    with pytest.raises(ConfigError, match="other training settings"):
        shutil.rmtree(tmp_path / "crashed" / "checkpoints" / "best")
        train_encoder(phantoms, tmp_path / "crashed", _tiny_config(tmp_path, lr=1e-3), workers=0,
                      progress=False, resume=True)


def test_train_encoder_refuses_a_grid_that_does_not_fit_the_encoder(phantoms, tmp_path):
    config = _tiny_config(tmp_path, preprocess={"spacing_mm": [12.0, 12.0, 24.0], "shape_xyz": [40, 40, 16]})
    with pytest.raises(ConfigError, match="does not fit encoder config"):
        train_encoder(phantoms, tmp_path / "out", config, workers=0, progress=False)


def test_train_encoder_names_a_volume_it_cannot_read(phantoms, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    victim = next((data / "volumes").rglob("*.nii.gz"))
    victim.write_bytes(b"not a nifti")
    with pytest.raises(DatasetError, match=victim.name):
        train_encoder(data, tmp_path / "out", _tiny_config(tmp_path), workers=0, progress=False)


@pytest.mark.parametrize("standardize, windowed", [(False, False), (True, False), (True, True)])
def test_shared_projection_and_head_input_export_exactly_into_the_ctclip_path(standardize, windowed):
    """Trained with the projection shared over positions, a scaled (and standardised) latent and
    channels made inside the forward, saved as CT-CLIP's grid projection and a plain head: the saved
    pair on the preprocessed channels computes the same logits."""
    from engine.preprocess import PreprocessConfig, apply_windows
    from training.encoder_recipe import EncoderWithHead, make_trainable
    from training.image_model_common import fold_input_affine

    torch.manual_seed(0)
    pp = PreprocessConfig(hu_range=(-1000.0, 3000.0), windows=((-1000.0, 0.0), (1000.0, 3000.0)),
                          reference_channel=4.0) if windowed else None
    encoder = ENCODERS.build("ctvit", {**TINY_ENCODER, "channels": pp.channels if pp else 1})
    model = EncoderWithHead(encoder, AbnormalityHead(AbnormalityHeadConfig(in_dim=32)), tied_projection=True,
                            preprocess=pp, standardize_latent=standardize)
    trained = {n for n, p in model.named_parameters() if p in set(make_trainable(model))}
    assert "shared_projection.weight" in trained and "encoder.to_visual_latent.weight" not in trained
    assert "encoder.to_visual_latent_extra.weight" not in trained
    x = torch.rand(2, 1, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        for _ in range(3):  # running statistics away from their initial (0, 1)
            model.train()(torch.rand(4, 1, 16, 32, 32) * 2 - 1, quantize=False)
    if standardize:
        assert model.latent_norm.running_var.std() > 0
    model.eval()
    with torch.no_grad():
        expected = model(x, quantize=True)
        model.export_projection()
        head = model.head
        fold_input_affine(head, *model.head_input_affine())
        got = head(encoder.eval()(apply_windows(x, pp) if pp else x))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_codebook_fit_recovers_token_clusters_by_cosine():
    from training.encoder_recipe import fit_codebook

    encoder = ENCODERS.build("ctvit", {**TINY_ENCODER, "codebook_size": 3})
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0] + [0.0] * 31, [0.0, 2.0] + [0.0] * 30, [0.0, 0.0, -3.0] + [0.0] * 29])
    tokens = torch.cat([c + 0.05 * torch.randn(200, 32, generator=g) for c in centres])
    stats = fit_codebook(encoder, tokens, iters=10, seed=0)
    assert stats["rows_used"] == 3 and stats["mean_cosine"] > 0.95
    vq = encoder.visual_transformer.vq
    quantised, _ = vq(tokens)
    # each token comes back as its cluster's raw mean (magnitude kept), as CT-CLIP's VQ returns rows
    for i, c in enumerate(centres):
        torch.testing.assert_close(quantised[i * 200:(i + 1) * 200].mean(0), c, atol=0.02, rtol=0)


def test_token_targets_cover_the_planted_finding_in_the_encoder_grid():
    """The per-token targets are computed from the truth's coordinates; the planted nodule's own
    voxels, taken through the real preprocessing, must land only in tokens marked for it."""
    from engine.preprocess import preprocess_array
    from engine.synth.canvas import Tissue
    from engine.synth.case import generate_case
    from training.token_targets import token_targets

    case = generate_case(5, {"Lung nodule": {"lobe": "RUL", "diameter_mm": 20}, "Emphysema": {}}, scale=8)
    truth = {"shape": list(case.hu.shape), "spacing_mm": list(case.spacing), "findings": case.truth}
    grid = PreprocessConfig(spacing_mm=(6.0, 6.0, 12.0), shape_xyz=(64, 64, 32))
    targets = token_targets(truth, LABELS, grid, patch_size=8, temporal_patch_size=4)
    assert targets.shape == (8, 8, 8, len(LABELS))

    marker = np.where(case.tissue == Tissue.LESION, 1000.0, -1000.0).astype(np.float32)
    x = preprocess_array(marker, case.spacing, grid)[0]  # (D, H, W)
    touched = (x.reshape(8, 4, 8, 8, 8, 8).amax(dim=(1, 3, 5)) > -0.9).numpy()
    nodule = targets[..., LABELS.index("Lung nodule")] > 0
    assert touched.any() and (nodule | ~touched).all(), "a token holding nodule voxels is not a target"
    assert nodule.sum() <= 8  # a 20 mm ball touches at most 2 x 2 x 2 tokens of 48 mm
    assert (targets[..., LABELS.index("Emphysema")] == 1).all()  # diffuse: every token carries the label
    others = [j for j, n in enumerate(LABELS) if n not in ("Lung nodule", "Emphysema")]
    assert not targets[..., others].any()


def test_train_encoder_token_loss_needs_the_phantom_truth(phantoms, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    (data / "phantom_truth.json").unlink()
    with pytest.raises(DatasetError, match="--token-loss-weight 0"):
        train_encoder(data, tmp_path / "out", _tiny_config(tmp_path), workers=0, progress=False)


def test_train_encoder_cli_passes_shift_voxels_and_token_weight_cap_and_refuses_bad_ones(tmp_path, capsys,
                                                                                        monkeypatch):
    import cli
    import training.encoder_recipe as encoder_module

    seen = {}

    def fake_train(data, out, config, **kw):
        seen["shift"], seen["cap"] = config.shift_voxels, config.token_pos_weight_max
        raise SystemExit(0)

    monkeypatch.setattr(encoder_module, "train_encoder", fake_train)
    base = ["train-encoder", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        cli.main(base + ["--shift-voxels", "0", "1", "2", "--token-pos-weight-max", "300"])
    assert seen == {"shift": (0, 1, 2), "cap": 300.0}
    with pytest.raises(SystemExit):
        cli.main(base)
    assert seen["cap"] == EncoderTrainConfig().token_pos_weight_max
    assert cli.main(base + ["--shift-voxels", "-1", "0", "0"]) == 1
    assert "--shift-voxels must be 0 or more" in capsys.readouterr().err
    assert cli.main(base + ["--token-pos-weight-max", "0.5"]) == 1
    assert "--token-pos-weight-max must be at least 1, got 0.5" in capsys.readouterr().err


def test_windowed_training_keeps_one_channel_and_matches_the_inference_path(phantoms, tmp_path):
    """Multi-window + reference-channel input: training keeps one plain channel per volume (on
    disk under the config's `base` fingerprint) and makes the channels per batch; what it writes
    into the cache equals preprocess(volume, full config) -> encoder -> head at inference."""
    from engine.preprocess import PreprocessConfig

    windowed = {**TINY_GRID, "hu_range": [-1000.0, 3000.0], "windows": [[-1350.0, 150.0], [1000.0, 3000.0]],
                "reference_channel": 4.0}
    path = tmp_path / "tiny3.json"
    path.write_text(json.dumps({**TINY_ENCODER, "channels": 3}))
    config = _tiny_config(tmp_path, encoder_config=str(path), preprocess=windowed, epochs=2)
    tensors = tmp_path / "tensors"
    train_encoder(phantoms, tmp_path / "image", config, workers=0, progress=False, tensor_cache=tensors,
                  cache_out=tmp_path / "cache")
    pp = PreprocessConfig.from_dict(windowed)
    kept = list((tensors / pp.base.fingerprint()).glob("*.npy"))
    assert kept and all(np.load(f).shape == (1, 16, 32, 32) for f in kept)

    root, cfg = load_image_model(tmp_path / "image")
    assert PreprocessConfig.from_dict(cfg.preprocess) == pp
    encoder = ENCODERS.build(cfg.encoder.name, cfg.encoder.config)
    load_ctclip_vision(encoder, cfg.encoder.weights, strict=True)
    head = AbnormalityHead(cfg.classifier.config)
    head.load_state_dict(load_file(cfg.classifier.weights))
    from engine.data import CTRateDataset

    dataset = CTRateDataset.open(phantoms)
    cache = EmbeddingCache.open(tmp_path / "cache")
    for split in ("train", "test"):
        name = dataset.split(split)[0].volume_name
        x = preprocess(dataset.load_volume(name), pp)
        assert x.shape == (3, 16, 32, 32)
        with torch.no_grad():
            logits = head(encoder.eval()(x[None]))[0].numpy()
        np.testing.assert_allclose(logits, cache.get(name).logits, atol=1e-4)


def test_train_encoder_cli_names_a_channel_mismatch(phantoms, tmp_path, capsys):
    import cli

    args = ["train-encoder", "--data", str(phantoms), "--out", str(tmp_path / "out"),
            "--preprocess", "demo-windowed", "--encoder-config", "demo-small"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "6 channel(s) (5 HU windows + the reference channel)" in err and "takes 1" in err
    assert not (tmp_path / "out").exists()
