"""A tiny training setup for the connector, evaluate and sweep tests: a CT-RATE-format dataset
(reports, labels, splits, stub volume files), an image model (small CT-ViT + classifier head) and
an embedding cache whose latents carry the labels (so a connector has something to learn) and whose
logits are the head's output on them, as `rad3d train-classifier` would write them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from engine.labels import ct_rate
from engine.preprocess import PreprocessConfig

GRID = PreprocessConfig(spacing_mm=(7.5, 7.5, 15.0), shape_xyz=(48, 48, 20))
# Findings text per label (a subset of the 18 CT-RATE labels, by index), from the tiny tokenizer's corpus.
SENTENCES = {
    1: "Coronary artery calcification is present.",
    2: "Cardiomegaly is present.",
    8: "Atelectasis at the left lung base.",
    11: "There is a nodule in the right upper lobe.",
    17: "Hiatal hernia is noted.",
}
NORMAL = "No pleural effusion or pneumothorax."


def write_image_model(image: Path, seed: int = 0):
    """A tiny image model folder (small CT-ViT + head, GRID preprocessing); returns (encoder, head)."""
    from safetensors.torch import save_file

    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.encoders import ENCODERS
    from engine.encoders.checkpoint import save_encoder_weights
    from engine.rundir import ClassifierSpec, EncoderSpec, ImageModelConfig, save_image_model

    labels_set = ct_rate()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = ENCODERS.build("ctvit", "ctclip-small-fixture")
        encoder.visual_transformer.vq._codebook.initted.fill_(1)
        head = AbnormalityHead(AbnormalityHeadConfig(in_dim=encoder.cfg.dim_latent, n_labels=len(labels_set)))
    image.mkdir(parents=True)
    save_encoder_weights(encoder, image / "encoder.safetensors")
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(image / "classifier.safetensors"))
    save_image_model(image, ImageModelConfig(
        label_set=labels_set, preprocess=GRID,
        encoder=EncoderSpec("ctvit", encoder.cfg.to_dict(), "encoder.safetensors"),
        classifier=ClassifierSpec(head.config, "classifier.safetensors", [0.5] * len(labels_set),
                                  valid_auroc=[0.5 + 0.025 * i for i in range(len(labels_set))]),
    ))
    return encoder, head


def build_setup(root: Path, *, n_train: int = 16, n_valid: int = 4, n_test: int = 4, seed: int = 0) -> dict[str, Path]:
    """Write data/, image/ and cache/ under root; return their paths."""
    from engine.cache import EmbeddingCache
    from engine.embedding import identity_for

    rng = np.random.default_rng(seed)
    labels_set = ct_rate()
    data, image, cache_dir = root / "data", root / "image", root / "cache"
    (data / "volumes").mkdir(parents=True)

    names, splits, reports, label_rows = [], [], [], []
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        for i in range(n):
            name = f"{split}_{i + 1}_a_1.nii.gz"
            labels = np.zeros(len(labels_set), dtype=int)
            chosen = rng.choice(sorted(SENTENCES), size=int(rng.integers(0, 3)), replace=False)
            labels[list(chosen)] = 1
            text = " ".join([SENTENCES[int(k)] for k in sorted(chosen)] or [NORMAL])
            names.append(name)
            splits.append(split)
            reports.append(text)
            label_rows.append(labels)
            nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)), str(data / "volumes" / name))
    pd.DataFrame({"VolumeName": names, "Findings_EN": reports, "Impressions_EN": ["Not given."] * len(names)}).to_csv(
        data / "reports.csv", index=False)
    pd.DataFrame({"VolumeName": names, "split": splits}).to_csv(data / "splits.csv", index=False)
    labels_df = pd.DataFrame(np.stack(label_rows), columns=list(labels_set.names))
    labels_df.insert(0, "VolumeName", names)
    labels_df.to_csv(data / "labels.csv", index=False)

    encoder, head = write_image_model(image, seed)

    d = encoder.cfg.dim_latent
    directions = rng.normal(size=(len(labels_set), d)).astype(np.float32)
    identity = identity_for("ctvit", encoder.cfg.to_dict(), image / "encoder.safetensors", GRID, d)
    cache = EmbeddingCache.create_or_open(cache_dir, identity)
    with torch.no_grad():
        for name, labels in zip(names, label_rows):
            latent = (labels @ directions + 0.1 * rng.normal(size=d)).astype(np.float32)
            cache.put(name, latent, head(torch.from_numpy(latent)[None])[0].numpy())
    cache.set_logits({}, label_set=labels_set.name, classifier=str(image))
    return {"data": data, "image": image, "cache": cache_dir}


# Fast settings for the tiny GPT-2 (d_llm 64): a small connector and a large learning rate.
TINY = dict(batch_size=4, prefix_len=4, clip_len=4, layers=2, heads=4, lr=1e-3, max_report_tokens=24)


def train_config(setup: dict[str, Path], decoder: Path, out: Path, variant: str = "v3", **overrides):
    from training.configs import TrainConfig

    return TrainConfig(variant=variant, data=str(setup["data"]), cache=str(setup["cache"]), decoder=str(decoder),
                       image_model=str(setup["image"]), out=str(out), **{**TINY, **overrides})


@pytest.fixture(scope="session")
def training_setup(tmp_path_factory) -> dict[str, Path]:
    return build_setup(tmp_path_factory.mktemp("training-setup"))


@pytest.fixture(scope="session")
def trained_v3_run(tmp_path_factory, training_setup, tiny_gpt2_dir) -> Path:
    """A finished V-3 run (a few steps) on the tiny setup."""
    from training.connector_recipe import train_connector

    out = tmp_path_factory.mktemp("v3-run") / "run"
    train_connector(train_config(training_setup, tiny_gpt2_dir, out, epochs=1), progress=False)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models step in milliseconds on one thread; on a shared, busy CPU two intra-op threads
    were measured 50-100x slower per step (they wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same_training(resumed_dir, whole_dir) -> None:
    """A run interrupted and resumed (resumed_dir) trained exactly as the uninterrupted one: every step once,
    the same losses and validation losses, the same last and best weights."""
    from training.checkpointing import find_checkpoint, read_trainable

    log, ref = (pd.read_csv(Path(d) / "metrics.csv") for d in (resumed_dir, whole_dir))
    assert log["step"].tolist() == ref["step"].tolist() == list(range(1, len(ref) + 1))  # every step once
    np.testing.assert_allclose(log["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(log["val_loss"].dropna(), ref["val_loss"].dropna(), rtol=1e-5)
    for name in ("last", "best"):
        a = read_trainable(find_checkpoint(Path(whole_dir), name))
        b = read_trainable(find_checkpoint(Path(resumed_dir), name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{name}: {k}")
