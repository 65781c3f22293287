"""A tiny run directory (small fixture CT-ViT, random abnormality head, tiny GPT-2) written with
engine.rundir.write_run, shared by the inference tests and the app's browser test. Import the
fixture into a test module together with its decoder fixtures:
`from run_fixtures import tiny_run  # noqa: F401` and `from decoder_fixtures import tiny_gpt2_dir, tiny_tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.generation import GenerationSettings
from engine.preprocess import PreprocessConfig
from engine.volume import Volume

# The fixture encoder takes (B, 1, 20, 48, 48): a 360 x 360 x 300 mm field of view on this grid.
SMALL_GRID = PreprocessConfig(spacing_mm=(7.5, 7.5, 15.0), shape_xyz=(48, 48, 20))
SETTINGS = GenerationSettings(max_new_tokens=12)
THRESHOLDS = np.linspace(0.2, 0.8, 18)


def chest_like_volume(seed: int = 0) -> Volume:
    """Air around an elliptic soft-tissue body with two low-density 'lungs' (HU, L-P-S order)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(120), np.arange(110), np.arange(60), indexing="ij")
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    body = ((x - 60) / 52) ** 2 + ((y - 55) / 40) ** 2 <= 1
    hu[body] = 40.0
    for cx in (38, 82):
        hu[body & (((x - cx) / 18) ** 2 + ((y - 52) / 26) ** 2 <= 1)] = -850.0
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    return Volume(hu=hu, spacing_mm=(3.0, 3.0, 5.0), source=f"chest-like-{seed}")


def write_tiny_run(root: Path, decoder_dir: Path, *, seed: int = 0, variant: str = "v3", provenance=None,
                   report_section: str = "findings"):
    """Write a complete run under `root` (with `provenance`, an engine.provenance.Provenance, when
    given; trained, it says, on `report_section`); returns (root, encoder, classifier, generator)."""
    from engine.classifier import AbnormalityHead, AbnormalityHeadConfig
    from engine.decoders import load_causal_lm
    from engine.encoders import ENCODERS
    from engine.labels import ct_rate
    from engine.model import build_report_generator
    from engine.rundir import write_run

    torch.manual_seed(seed)
    encoder = ENCODERS.build("ctvit", "ctclip-small-fixture")
    torch.nn.init.normal_(encoder.visual_transformer.vq._codebook.embed)  # a codebook that varies
    encoder.visual_transformer.vq._codebook.initted.fill_(1)
    classifier = AbnormalityHead(AbnormalityHeadConfig(in_dim=encoder.cfg.dim_latent, n_labels=18))
    decoder, _ = load_causal_lm(decoder_dir)
    generator = build_report_generator(variant, decoder, d_embed=encoder.cfg.dim_latent, n_labels=18,
                                       prefix_len=4, clip_len=4, n_layers=2, n_heads=4)
    write_run(root, label_set=ct_rate(), preprocess=SMALL_GRID, encoder_name="ctvit", encoder=encoder,
              classifier=classifier, thresholds=THRESHOLDS, generator=generator, decoder_path=decoder_dir,
              generation=SETTINGS, provenance=provenance, report_section=report_section)
    return root, encoder, classifier, generator


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_gpt2_dir):
    return write_tiny_run(tmp_path_factory.mktemp("run"), tiny_gpt2_dir)
