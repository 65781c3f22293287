"""ReportGenerator: connector (the trained prefix network) + causal-LM decoder, wired per variant.

Training sequence (ClipCap convention: no BOS token; the prefix takes its place):

    inputs  [ prefix_1 … prefix_P | emb(report_1) … emb(report_T) emb(EOS) | padding ]
    labels  [   -100  …   -100    |   report_1   …   report_T      EOS     |  -100   ]

so the loss is the NLL of the report tokens (and the closing EOS) given the prefix and the tokens
before them; prefix positions and padding never count. Generation starts from the prefix alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from engine.connectors import ConnectorConfig, build_connector
from engine.decoders.loading import freeze, unfreeze
from engine.decoders.lora import LoraSettings, apply_lora
from engine.errors import ConfigError
from engine.model_configs import ReportGeneratorConfig  # defined without torch
from engine.variants import get_variant
from engine.weights import load_trainable_strict

IGNORE_INDEX = -100  # positions the cross-entropy skips (transformers' convention)


class ReportGenerator(nn.Module):
    def __init__(self, config: ReportGeneratorConfig, decoder: nn.Module, lora: LoraSettings | None = None):
        super().__init__()
        if config.decoder_mode not in ("frozen", "full", "lora"):
            raise ConfigError(f"decoder_mode must be frozen, full or lora, got {config.decoder_mode!r}")
        d_llm = decoder.get_input_embeddings().embedding_dim
        if d_llm != config.connector.d_llm:
            raise ConfigError(f"connector d_llm {config.connector.d_llm} does not match the decoder's {d_llm}")
        self.config = config
        self.connector = build_connector(config.connector)
        if config.decoder_mode == "full":
            unfreeze(decoder)
        else:
            freeze(decoder)
            if config.decoder_mode == "lora":
                decoder = apply_lora(decoder, lora or LoraSettings())
        self.decoder = decoder
        self.chunked_loss = True

    @property
    def uses_logits(self) -> bool:
        return self.config.connector.n_labels > 0

    @property
    def prefix_len(self) -> int:
        return self.config.connector.prefix_len

    def train(self, mode: bool = True) -> ReportGenerator:
        super().train(mode)
        if self.config.decoder_mode == "frozen":
            self.decoder.eval()  # a frozen decoder keeps dropout off while the connector trains
        return self

    def prefix(self, embedding: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d_embed) latent [+ (B, n_labels) logits, detached] → (B, P, d_llm) in the decoder's dtype."""
        prefix = self.connector(embedding, logits if self.uses_logits else None)
        return prefix.to(self.decoder.get_input_embeddings().weight.dtype)

    def build_inputs(
        self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs_embeds, attention_mask, labels) for the prefix followed by right-padded report tokens."""
        b, p = prefix.shape[:2]
        tokens = self.decoder.get_input_embeddings()(input_ids)
        inputs_embeds = torch.cat((prefix, tokens), dim=1)
        prefix_mask = torch.ones(b, p, dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat((prefix_mask, attention_mask), dim=1)
        report_labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        prefix_labels = torch.full((b, p), IGNORE_INDEX, dtype=input_ids.dtype, device=input_ids.device)
        return inputs_embeds, mask, torch.cat((prefix_labels, report_labels), dim=1)

    def loss(
        self,
        embedding: torch.Tensor,
        logits: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean NLL of the report tokens given the prefix (prefix positions and padding masked).
        A frozen decoder takes engine.losses' path: logits only at report positions, in chunks (same
        loss; no full-vocabulary float32 logits for every position)."""
        inputs_embeds, mask, labels = self.build_inputs(self.prefix(embedding, logits), input_ids, attention_mask)
        if self.uses_chunked_loss:
            from engine.losses import report_cross_entropy

            return report_cross_entropy(self.decoder, inputs_embeds, mask, labels)
        return self.decoder(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels).loss

    @property
    def uses_chunked_loss(self) -> bool:
        """Whether `loss` skips the decoder's full logits (frozen decoders it supports; set
        `chunked_loss = False` on the instance to force transformers' path, e.g. as a reference)."""
        from engine.losses import chunked_loss_supported

        return self.chunked_loss and self.config.decoder_mode == "frozen" and chunked_loss_supported(self.decoder)

    forward = loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a run directory stores: every trainable parameter (connector; plus the decoder
        for V-1/baseline, or its LoRA adapters), by name. The frozen decoder comes from its own folder."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str | None = None) -> None:
        """Copy `state` into the trainable parameters; CheckpointError naming missing, unexpected or
        mis-shaped keys (`source`: the file, for the message)."""
        load_trainable_strict(self, state, f"variant {self.config.variant}", source)

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, frozen) parameter counts; tied weights are counted once."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return trainable, frozen

    @torch.no_grad()
    def generate(self, embedding: torch.Tensor, logits: torch.Tensor | None, tokenizer, settings=None, **kwargs):
        """Reports for a batch of latents: see engine.generation.generate_from_prefix."""
        from engine.generation import GenerationSettings, generate_from_prefix

        return generate_from_prefix(
            self.decoder, tokenizer, self.prefix(embedding, logits), settings=settings or GenerationSettings(), **kwargs
        )


def build_report_generator(
    variant: str,
    decoder: nn.Module,
    *,
    d_embed: int = 512,
    n_labels: int = 18,
    prefix_len: int = 10,
    clip_len: int = 10,
    n_layers: int = 8,
    n_heads: int = 8,
    lora: LoraSettings | None = None,
) -> ReportGenerator:
    """The generator of a named variant (engine.variants) on `decoder`. With `lora`, a variant whose
    decoder would be fine-tuned or frozen gets LoRA adapters instead."""
    spec = get_variant(variant)
    connector = ConnectorConfig(
        kind=spec.connector,
        d_embed=d_embed,
        n_labels=n_labels if spec.uses_logits else 0,
        d_llm=decoder.get_input_embeddings().embedding_dim,
        prefix_len=spec.prefix_len or prefix_len,
        clip_len=clip_len,
        n_layers=n_layers,
        n_heads=n_heads,
    )
    mode = "lora" if lora is not None else ("full" if spec.decoder_trainable else "frozen")
    return ReportGenerator(ReportGeneratorConfig(spec.name, connector, mode), decoder, lora)


def encode_reports(
    tokenizer, reports: Sequence[str], max_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded: each report's tokens without special tokens, then
    EOS so the model learns to stop. `max_tokens` truncates the text tokens (EOS kept)."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for text in reports:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_tokens is not None:
            ids = ids[: max(max_tokens - 1, 0)]
        rows.append(ids + [tokenizer.eos_token_id])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask


__all__ = [
    "IGNORE_INDEX",
    "ReportGenerator",
    "ReportGeneratorConfig",
    "build_report_generator",
    "encode_reports",
]
