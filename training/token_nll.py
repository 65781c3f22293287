"""The one validation measure of decoder training: token-weighted NLL of the target tokens (the
report for connectors, the answer for multimodal runs), summed per example and gathered from
every process."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.model import IGNORE_INDEX


def target_nll(decoder, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of NLL over the labelled tokens, number of labelled tokens) per example."""
    logits = decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


@torch.no_grad()
def validation_loss(model, loader, accelerator, example_nll: Callable) -> float:
    """Token-weighted mean of `example_nll(model, batch)` over the whole loader, from every process."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    total, count = 0.0, 0
    for batch in loader:
        with accelerator.autocast():
            nll, n = example_nll(unwrapped, batch)
        nll, n = accelerator.gather_for_metrics((nll, n))
        total += float(nll.double().sum())
        count += int(n.sum())
    unwrapped.train()
    return total / max(count, 1)
