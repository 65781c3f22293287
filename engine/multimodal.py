"""MultimodalModel: image tokens spliced into a prompt for a (LoRA-tuned) causal-LM decoder, as
M3D-LaMed does (`prepare_inputs_for_multimodal`; ../shared/m3d/README.md, "LLM splice").

Training sequence (one row; right-padded in a batch):

    tokens  [ BOS? | ph_1 … ph_n | instruction | answer …  EOS | pad ]
    embeds  [ BOS? | img_1 … img_n | emb(instruction) | emb(answer) emb(EOS) | pad ]
    labels  [ -100 |  -100 … -100  |    -100 …      |  answer …    EOS       | -100 ]

The n image tokens (B, n, d_llm) come from any registered connector (engine.connectors; ViT3D's
spatial pooling, or a connector over cached CT-CLIP latents) and *replace* the n placeholder
positions right after BOS, where the tokenizer adds one (M3D keeps BOS at position 0 and never uses
its `<im_patch>` embeddings; here the placeholders are pad tokens, overwritten). The loss is the NLL
of the answer tokens and the closing EOS only. Generation feeds the same sequence without the
answer, left-padded, to transformers' generate (engine.generation).

Stages (M3D's): stage 1 "frozen" trains the connector alone; stage 2 "lora" trains the connector
and LoRA adapters, the decoder's own weights frozen. `merged_decoder` folds the adapters into a
plain decoder (peft's merge_and_unload), so a run's decoder loads without peft.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from engine.connectors import build_connector
from engine.decoders.loading import freeze
from engine.decoders.lora import apply_lora
from engine.errors import ConfigError
from engine.model import IGNORE_INDEX
from engine.model_configs import GenerationSettings, LoraSettings, MultimodalConfig
from engine.weights import load_trainable_strict


@dataclass
class PromptBatch:
    """Token rows of a batch with n placeholder positions each starting at `image_start`."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L): -100 except the answer tokens and EOS
    image_start: torch.Tensor  # (B,) first placeholder position of each row

    def to(self, device) -> PromptBatch:
        return PromptBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.image_start)))


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a BOS token first (LLaMA's does, GPT-2's and SmolLM2's do not)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return len(ids) > 0 and ids[0] == bos and ids != tokenizer("a", add_special_tokens=False)["input_ids"]


def prompt_length(tokenizer, n_image: int, instruction: str) -> int:
    """Positions a prompt takes before the answer: BOS?, the image tokens and the instruction."""
    return int(adds_bos(tokenizer)) + n_image + len(tokenizer(instruction, add_special_tokens=False)["input_ids"])


def encode_prompts(tokenizer, n_image: int, instructions: Sequence[str], answers: Sequence[str] | None = None,
                   *, max_answer_tokens: int | None = None) -> PromptBatch:
    """Rows of [BOS?, n placeholders, instruction, (answer, EOS)]. With answers (training):
    right-padded, labels on answer + EOS (an answer cut to `max_answer_tokens`, EOS kept). Without
    (generation): left-padded, so every prompt ends where the new tokens begin."""
    if tokenizer.eos_token_id is None:
        raise ConfigError("the tokenizer has no EOS token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    head = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    rows, label_rows = [], []
    for i, instruction in enumerate(instructions):
        prompt = head + [pad] * n_image + tokenizer(instruction, add_special_tokens=False)["input_ids"]
        answer = []
        if answers is not None:
            answer = tokenizer(answers[i], add_special_tokens=False)["input_ids"]
            if max_answer_tokens is not None:
                answer = answer[: max(max_answer_tokens - 1, 0)]
            answer = answer + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        label_rows.append([IGNORE_INDEX] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    left = answers is None
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    start = torch.zeros(len(rows), dtype=torch.long)
    for i, (row, lab) in enumerate(zip(rows, label_rows)):
        at = width - len(row) if left else 0
        ids[i, at : at + len(row)] = torch.tensor(row)
        mask[i, at : at + len(row)] = 1
        labels[i, at : at + len(row)] = torch.tensor(lab)
        start[i] = at + len(head)
    return PromptBatch(ids, mask, labels, start)


class MultimodalModel(nn.Module):
    def __init__(self, config: MultimodalConfig, decoder: nn.Module, lora: LoraSettings | None = None):
        super().__init__()
        d_llm = decoder.get_input_embeddings().embedding_dim
        if d_llm != config.connector.d_llm:
            raise ConfigError(f"connector d_llm {config.connector.d_llm} does not match the decoder's {d_llm}")
        self.config = config
        self.connector = build_connector(config.connector)
        if not config.use_image:
            self.connector.requires_grad_(False)
        freeze(decoder)
        if config.decoder_mode == "lora":
            decoder = apply_lora(decoder, lora or LoraSettings())
        self.decoder = decoder

    @property
    def n_image(self) -> int:
        return self.config.image_tokens

    def train(self, mode: bool = True) -> MultimodalModel:
        super().train(mode)
        if self.config.decoder_mode == "frozen":
            self.decoder.eval()  # stage 1: a frozen decoder keeps dropout off
        return self

    def image_tokens(self, features: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        """Image features [+ classifier logits, when the connector reads them] → (B, n, d_llm) in the decoder's dtype."""
        if not self.config.use_image:  # the text-only baseline: no image tokens at all
            d_llm = self.decoder.get_input_embeddings().embedding_dim
            return features.new_zeros(features.shape[0], 0, d_llm).to(self.decoder.get_input_embeddings().weight.dtype)
        if self.config.connector.kind == "spatial-pooling" and features.dim() == 2:  # the cache's flat rows
            features = features.view(features.shape[0], self.config.connector.n_tokens_in, -1)
        tokens = self.connector(features, logits if self.config.connector.n_labels else None)
        if tokens.dim() != 3 or tokens.shape[1] != self.n_image:
            raise ConfigError(f"connector gave image tokens of shape {tuple(tokens.shape)}, expected (B, {self.n_image}, d_llm)")
        return tokens.to(self.decoder.get_input_embeddings().weight.dtype)

    def splice(self, image_tokens: torch.Tensor, prompts: PromptBatch) -> torch.Tensor:
        """The token embeddings of `prompts` with the placeholder positions replaced by the image tokens."""
        embeds = self.decoder.get_input_embeddings()(prompts.input_ids)
        b, n = image_tokens.shape[:2]
        rows = torch.arange(b, device=embeds.device)[:, None]
        cols = prompts.image_start[:, None] + torch.arange(n, device=embeds.device)[None]
        return embeds.index_put((rows, cols), image_tokens.to(embeds.dtype))

    def loss(self, features: torch.Tensor, logits: torch.Tensor | None, prompts: PromptBatch) -> torch.Tensor:
        """Mean NLL of the answer tokens (+ EOS) given image tokens and instruction."""
        embeds = self.splice(self.image_tokens(features, logits), prompts)
        return self.decoder(inputs_embeds=embeds, attention_mask=prompts.attention_mask, labels=prompts.labels).loss

    forward = loss

    @torch.no_grad()
    def generate(self, features, logits, prompts: PromptBatch, tokenizer, settings: GenerationSettings | None = None,
                 **kwargs):
        """Answers for left-padded prompts (encode_prompts without answers): engine.generation.GenerationResult."""
        from engine.generation import generate_from_prefix

        embeds = self.splice(self.image_tokens(features, logits), prompts)
        return generate_from_prefix(self.decoder, tokenizer, embeds, prompts.attention_mask,
                                    settings=settings or GenerationSettings(), **kwargs)

    @torch.no_grad()
    def stream(self, features, logits, prompts: PromptBatch, tokenizer,
               settings: GenerationSettings | None = None) -> Iterator[str]:
        """Text pieces of one answer as greedy decoding writes them (one prompt)."""
        from engine.generation import stream_from_prefix

        if prompts.input_ids.shape[0] != 1:
            raise ValueError("streaming takes one prompt")
        embeds = self.splice(self.image_tokens(features, logits), prompts)
        yield from stream_from_prefix(self.decoder, tokenizer, embeds, settings=settings or GenerationSettings())

    # -- the weights a run or a checkpoint keeps ---------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter by name: the connector (stage 1), and the LoRA adapters (stage 2)."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str | None = None) -> None:
        load_trainable_strict(self, state, "this multimodal model", source)

    def count_parameters(self) -> dict[str, tuple[int, int]]:
        """(trainable, frozen) per part: connector, LoRA adapters, decoder base, total."""
        def split(params) -> tuple[int, int]:
            params = list(params)
            t = sum(p.numel() for p in params if p.requires_grad)
            return t, sum(p.numel() for p in params) - t

        named = list(self.decoder.named_parameters())
        adapters = [p for n, p in named if "lora_" in n]
        base = [p for n, p in named if "lora_" not in n]
        return {"connector": split(self.connector.parameters()), "lora adapters": split(adapters),
                "decoder": split(base), "total": split(self.parameters())}

    def merged_decoder(self) -> nn.Module:
        """A plain decoder (a copy) with the LoRA adapters folded into its weights; the decoder itself
        (a copy) when there are none. Loads and runs without peft."""
        decoder = copy.deepcopy(self.decoder)
        if self.config.decoder_mode == "lora":
            decoder = decoder.merge_and_unload()
        for p in decoder.parameters():
            p.requires_grad_(False)
        return decoder


__all__ = ["MultimodalModel", "PromptBatch", "adds_bos", "encode_prompts", "prompt_length"]
