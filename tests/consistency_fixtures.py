"""A case built to disagree with its classifier: a run whose decoder writes a known draft ("Hiatal
hernia is noted. No lymphadenopathy in the mediastinum") for any scan, and whose thresholds, set from
the classifier's own probabilities on one case, score hiatal hernia confidently low (the draft
asserts it), lymphadenopathy and cardiomegaly confidently high (the draft denies one and omits the
other) and every other finding confidently low (agreement). Import with
`from consistency_fixtures import disagreeing_run  # noqa: F401` beside the decoder fixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

DRAFT = "Hiatal hernia is noted. No lymphadenopathy in the mediastinum"
ASSERTED, DENIED, OMITTED = "Hiatal hernia", "Lymphadenopathy", "Cardiomegaly"


def scripted_gpt2(tokenizer, text: str, folder: Path) -> Path:
    """A GPT-2 whose greedy continuation of any prefix is `text`, then EOS: its block adds nothing,
    each token of `text` points (through an untied head) at the next, and the final layer norm's bias
    points any other input (the prefix) at the first token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    ids = tokenizer.encode(text) + [eos]
    assert len(set(ids)) == len(ids), "a bigram script needs each token once"
    hidden = 64
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=hidden, n_layer=1, n_head=4,
                        tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in [*model.transformer.h.parameters(), model.transformer.wpe.weight, model.transformer.wte.weight,
                  model.lm_head.weight, model.transformer.ln_f.bias]:
            p.zero_()
        # One direction carries only the layer norm's bias (weight 0 there), so the first token's logit is
        # a constant 120: above any other from a prefix (20 × a normalised entry, at most ~4), below a
        # scripted token's next (20 × ~7.9 for a one-hot input).
        start = hidden - 1
        model.transformer.ln_f.weight[start] = 0.0
        model.transformer.ln_f.bias[start] = 12.0
        model.lm_head.weight[ids[0], start] = 10.0
        for k, (token, following) in enumerate(zip(ids[:-1], ids[1:])):
            model.transformer.wte.weight[token, k] = 1.0
            model.lm_head.weight[following, k] = 20.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def disagreeing_thresholds(probabilities: dict[str, float], margin: float = 3.0) -> list[float]:
    """Per finding a threshold `margin` logits above (confidently low) or below (confidently high) its probability."""
    def shifted(p: float, by: float) -> float:
        p = min(max(p, 1e-6), 1 - 1e-6)
        return 1 / (1 + math.exp(-(math.log(p / (1 - p)) + by)))

    return [shifted(p, -margin if name in (DENIED, OMITTED) else margin) for name, p in probabilities.items()]


def make_disagreeing_run(root: Path, tokenizer, volume) -> Path:
    """The run, its thresholds set against `volume` (the case the test opens); validation AUROC 0.95 everywhere."""
    from engine.image_model import open_image_model
    from run_fixtures import write_tiny_run

    decoder = scripted_gpt2(tokenizer, DRAFT, root / "decoder")
    run = write_tiny_run(root / "run", decoder)[0]
    image = open_image_model(run)
    probabilities = image.by_name(image.features(volume).probabilities)
    config = json.loads((run / "config.json").read_text())
    config["classifier"]["thresholds"] = disagreeing_thresholds(probabilities)
    config["classifier"]["valid_auroc"] = [0.95] * len(probabilities)
    (run / "config.json").write_text(json.dumps(config, indent=1))
    return run


@pytest.fixture(scope="module")
def disagreeing_run(tmp_path_factory, tiny_tokenizer):
    """(run, volume): the run above and the chest-like volume it disagrees on."""
    from run_fixtures import chest_like_volume

    volume = chest_like_volume(0)
    return make_disagreeing_run(tmp_path_factory.mktemp("disagreeing"), tiny_tokenizer, volume), volume
