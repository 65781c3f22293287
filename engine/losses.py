"""Report cross-entropy without full-vocabulary logits for every position.

`decoder(..., labels=...)` computes (B, L, vocab) logits, upcast to float32, for every position,
prefix and padding included: at LLaMA-3.2-1B's 128k vocabulary and 32 × 266 tokens that is 4.3 GB
in the forward pass alone. Here the decoder BODY (model.model / model.transformer) runs to hidden
states, only the positions that predict a report token are gathered, and the LM head + cross-entropy
run on chunks of them; each chunk is recomputed in the backward pass (activation checkpointing) so
at most one chunk's logits exist at a time. The loss is the same mean NLL as transformers' (shift by
one, ignore -100, mean over counted tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
DEFAULT_CHUNK = 1024  # positions per LM-head chunk


def chunked_loss_supported(decoder: nn.Module) -> bool:
    """True for a transformers causal LM whose logits are exactly `lm_head(body(x))` (optionally
    soft-capped): GPT-2, LLaMA, Gemma... and not a PEFT wrapper or a model that rescales logits."""
    from transformers import PreTrainedModel

    if not isinstance(decoder, PreTrainedModel) or not isinstance(decoder.get_output_embeddings(), nn.Linear):
        return False
    config = decoder.config
    if getattr(config, "logits_scaling", None) not in (None, 1, 1.0):  # e.g. Granite divides logits
        return False
    return _body(decoder) is not None


def _body(decoder: nn.Module) -> nn.Module | None:
    body = decoder.get_decoder() if hasattr(decoder, "get_decoder") else None
    return body if isinstance(body, nn.Module) and body is not decoder else None


def report_cross_entropy(
    decoder: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Mean next-token NLL of the labelled positions of (B, L, d) `inputs_embeds` (labels (B, L),
    IGNORE_INDEX where nothing is predicted), computing logits only where a label follows."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    hidden = _body(decoder)(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)[0]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    states = hidden[:, :-1][keep]  # (N, d): the positions whose next token is a report token
    targets = targets[keep]
    if targets.numel() == 0:
        return hidden.sum() * 0.0  # nothing to predict; keeps the graph (and the caller's backward)
    head = decoder.get_output_embeddings()
    cap = getattr(decoder.config, "final_logit_softcapping", None)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, targets.numel(), chunk_size):
        piece = (states[start : start + chunk_size], targets[start : start + chunk_size])
        if torch.is_grad_enabled() and states.requires_grad:
            total = total + checkpoint(_chunk_nll, head, cap, *piece, use_reentrant=False)
        else:
            total = total + _chunk_nll(head, cap, *piece)
    return total / targets.numel()


def _chunk_nll(head: nn.Module, cap: float | None, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(states).float()
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets, reduction="sum")


__all__ = ["DEFAULT_CHUNK", "chunked_loss_supported", "report_cross_entropy"]
