"""`rad3d train-classifier --tune-last-layer`: only the encoder's last layer and a new head change,
the split forward equals the encoder's, and the new image model records the tuning."""

import json

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import ConfigError
from engine.image_model import open_image_model
from engine.labels import load_label_set
from engine.rundir import load_image_model
from engine.synth.config import SynthConfig
from engine.synth.writer import write_dataset
from training.configs import ClassifierTrainConfig
from training.last_layer_recipe import LastLayerModel, build_tunable, file_digest, last_block_inputs, tune_last_layer
from training_fixtures import GRID, write_image_model

LAST = "visual_transformer.enc_temporal_transformer.layers.1."
NORM_OUT = "visual_transformer.enc_temporal_transformer.norm_out."


def test_split_forward_equals_the_encoder(tmp_path):
    encoder, _ = write_image_model(tmp_path / "image")
    _, cfg = load_image_model(tmp_path / "image")
    model = build_tunable(cfg, 21, ClassifierTrainConfig(tune_last_layer=True))
    videos = torch.rand(3, 1, 20, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x, (t, h, w) = last_block_inputs(model.encoder, videos, GRID, batch=2)  # batches of 2 and 1
    with torch.no_grad():
        split = model.latent(x.reshape(-1, t, x.shape[-1]), (3, t, h, w))
        whole = encoder.eval()(videos)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)
    assert isinstance(model, LastLayerModel) and model.head.config.n_labels == 21
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith((LAST, NORM_OUT)) for n in trainable)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    write_image_model(root / "image")
    data = write_dataset(SynthConfig(n=12, seed=1, scale=8.0, domain="inspect-like"), root / "data",
                         progress=False)
    config = ClassifierTrainConfig(tune_last_layer=True, epochs=2, batch_size=4, lr=1e-2, encoder_lr=1e-2,
                                   patience=5)
    result = tune_last_layer(data, root / "tuned", image_model=root / "image", config=config, workers=0,
                             label_set=load_label_set("inspect-like"), progress=False)
    return root, result


def test_tuning_changes_only_the_last_layer_and_the_head(tuned):
    root, result = tuned
    before = load_file(str(root / "image" / "encoder.safetensors"))
    after = load_file(str(root / "tuned" / "encoder.safetensors"))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the last layer did not move"
    assert all(k.startswith((LAST, NORM_OUT)) for k in changed), sorted(changed)[:5]
    # The new head predicts the data's label set (inspect-like, 21 findings), not the base's 18.
    image = open_image_model(root / "tuned")
    assert image.label_set.name == "inspect-like" and image.classifier.config.n_labels == 21
    assert len(image.thresholds) == 21
    # The saved encoder + folded head, on the inference path, give what training measured.
    from engine.data import resolve
    from training.volume_tensors import load_volume_tensors

    dataset = resolve(root / "data", label_set=image.label_set, section=None)
    names = [c.volume_name for c in dataset.split("test")]
    videos = load_volume_tensors(dataset, names, GRID, workers=0, progress=False)
    _, logits = image(videos)
    torch.testing.assert_close(torch.sigmoid(logits), torch.from_numpy(result.probabilities["test"]),
                               rtol=1e-4, atol=1e-5)


def test_image_model_records_the_tuning(tuned):
    root, result = tuned
    written = json.loads((root / "tuned" / "image_model.json").read_text())
    rec = written["tuned_last_layer"]
    assert rec["base_image_model_digest"] == file_digest(root / "image" / "image_model.json")
    assert rec["base_encoder_weights"] == file_digest(root / "image" / "encoder.safetensors")
    assert rec["trainable_encoder_parameters"] > 0 and "layers[-1]" in rec["layer"]
    assert "tuned_last_layer" not in json.loads((root / "image" / "image_model.json").read_text())
    _, cfg = load_image_model(root / "tuned")
    _, base = load_image_model(root / "image")
    assert cfg.encoder.weights != base.encoder.weights  # caches and runs made with it are told apart


def test_tuning_needs_an_image_model_and_no_cache(tmp_path, capsys):
    from cli import main

    for argv, match in ((["--data", str(tmp_path)], "needs --image-model"),
                        (["--data", str(tmp_path), "--image-model", str(tmp_path), "--cache", str(tmp_path)],
                         "give no --cache")):
        assert main(["train-classifier", "--tune-last-layer", "--out", str(tmp_path / "o"), *argv]) == 1
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="encoder_lr|bad classifier"):
        ClassifierTrainConfig(encoder_lr=0.0)
