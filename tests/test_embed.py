"""`rad3d embed`: each volume encoded once into the cache, resumable, bad volumes all reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cli
from engine.cache import EmbeddingCache
from engine.data import CTRateDataset
from engine.encoders import ENCODERS
from engine.encoders.checkpoint import save_encoder_weights
from engine.preprocess import PreprocessConfig, preprocess
from engine.synth.config import SynthConfig
from engine.synth.writer import write_dataset

GRID = PreprocessConfig(spacing_mm=(7.5, 7.5, 15.0), shape_xyz=(48, 48, 20))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    data = write_dataset(SynthConfig(n=5, seed=3, scale=8.0), root / "data", progress=False)
    torch.manual_seed(0)
    encoder = ENCODERS.build("ctvit", "ctclip-small-fixture")
    torch.nn.init.normal_(encoder.visual_transformer.vq._codebook.embed)
    encoder.visual_transformer.vq._codebook.initted.fill_(1)
    weights = save_encoder_weights(encoder, root / "encoder.safetensors")
    (root / "grid.json").write_text(json.dumps(GRID.to_dict()))
    return root, data, encoder, weights


def _embed(root, data, weights, out):
    return cli.main(["embed", "--data", str(data), "--encoder", str(weights), "--encoder-config",
                     "ctclip-small-fixture", "--preprocess", str(root / "grid.json"), "--out", str(out),
                     "--workers", "0", "--device", "cpu"])


def test_embed_fills_the_cache_with_the_encoder_latents(setup, capsys):
    root, data, encoder, weights = setup
    out = root / "cache"
    assert _embed(root, data, weights, out) == 0
    dataset = CTRateDataset.open(data)
    cache = EmbeddingCache.open(out)
    assert cache.names() == sorted(c.volume_name for c in dataset.cases)
    assert cache.identity.preprocess == GRID.fingerprint()
    first = dataset.cases[0]
    with torch.no_grad():
        expected = encoder(preprocess(dataset.load_volume(first), GRID).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(cache.get(first.volume_name).latent, expected, atol=1e-5)
    assert "5 embedded, 0 already cached" in capsys.readouterr().out
    # The cache records what it was made from: the phantoms (recognised as such) and the weights file.
    from engine.provenance import PHANTOMS, describe_dataset, file_sha256

    assert cache.provenance.data == (describe_dataset(data),) and cache.provenance.data[0].kind == PHANTOMS
    assert cache.provenance.encoder.sha256 == file_sha256(weights) and cache.provenance.synthetic_only

    # a rerun skips everything; a cache made with another grid is refused by name
    assert _embed(root, data, weights, out) == 0
    assert "0 embedded, 5 already cached" in capsys.readouterr().out
    (root / "grid.json").write_text(json.dumps({**GRID.to_dict(), "hu_range": [-900.0, 900.0]}))
    try:
        assert _embed(root, data, weights, out) == 1
        assert "made with other settings" in capsys.readouterr().err
    finally:
        (root / "grid.json").write_text(json.dumps(GRID.to_dict()))


def test_bad_volumes_are_all_reported_and_the_rest_cached(setup, tmp_path, capsys):
    import shutil

    root, data, _, weights = setup
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    cases = CTRateDataset.open(broken).cases
    for case in cases[:2]:
        case_path = case.volume_path
        case_path.write_bytes(case_path.read_bytes()[:300])  # truncated gzip
    assert _embed(root, broken, weights, tmp_path / "cache") == 1
    err = capsys.readouterr().err
    assert "2 volume(s) could not be embedded" in err
    assert all(c.volume_name in err for c in cases[:2])
    assert len(EmbeddingCache.open(tmp_path / "cache")) == len(cases) - 2


def test_embed_with_an_image_model_stores_its_classifier_logits(setup, tmp_path, capsys):
    from safetensors.torch import save_file

    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.labels import ct_rate
    from engine.rundir import ClassifierSpec, EncoderSpec, ImageModelConfig, save_image_model

    root, data, encoder, weights = setup
    head = AbnormalityHead(AbnormalityHeadConfig(in_dim=encoder.cfg.dim_latent))
    image = tmp_path / "image"
    image.mkdir()
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(image / "classifier.safetensors"))
    save_image_model(image, ImageModelConfig(
        label_set=ct_rate().to_dict(), preprocess=GRID.to_dict(),
        encoder=EncoderSpec("ctvit", encoder.cfg.to_dict(), str(weights)),
        classifier=ClassifierSpec(head.config.to_dict(), "classifier.safetensors", [0.5] * 18)))
    out = tmp_path / "cache"
    assert cli.main(["embed", "--data", str(data), "--image-model", str(image), "--out", str(out),
                     "--workers", "0", "--device", "cpu"]) == 0
    cache = EmbeddingCache.open(out)
    names = cache.names()
    latents, logits = cache.stack(names, with_logits=True)
    with torch.no_grad():
        expected = head(torch.from_numpy(latents)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert cache.identity.label_set == "ct-rate" and cache.identity.classifier == str(image.resolve())
    # An image model without provenance (older than it): the weights are described, the data added.
    assert cache.provenance.encoder.file == weights.name and cache.provenance.data[0].kind == "phantoms"
