"""Training examples of the multimodal system: (case, instruction, answer) over the embedding cache.

Tasks (formats in engine.prompts, M3D's):
- report: instruction "Findings:" (or "Impression:"), answer the report section of the case;
- vqa: instruction the question (closed: with M3D's "Choices: A. .. B. .."), answer the answer
  (closed: "B. Liver"). Items are the dataset's `vqa.csv` (engine.vqa.dataset_vqa: each item in
  its volume's split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError, DatasetError
from engine.multimodal import encode_prompts
from engine.prompts import answer_target, question_prompt, report_instruction
from engine.vqa import VqaItem, answer_text


@dataclass(frozen=True)
class Example:
    volume_name: str
    task: str  # "report" or "vqa"
    instruction: str
    answer: str  # the target text (engine.prompts.answer_target applied)
    question_type: str | None = None  # a VQA item's (engine.vqa.QUESTION_TYPES)
    form: str | None = None  # a VQA item's: closed or open


@dataclass
class MultimodalSplit:
    """One split's examples and the cached features of their cases (row `case_row[i]` for example i)."""

    name: str
    examples: list[Example]
    case_row: list[int]
    features: torch.Tensor  # (cases, d) float32
    logits: torch.Tensor | None  # (cases, n_labels)

    def __len__(self) -> int:
        return len(self.examples)


def report_examples(dataset, split: str, section: str) -> list[Example]:
    from training.data import section_text

    text = section_text(section)
    instruction = report_instruction(section)
    return [Example(c.volume_name, "report", instruction, answer_target(text(c))) for c in dataset.split(split)
            if text(c)]


def vqa_examples(items: list[VqaItem]) -> list[Example]:
    """VQA items (one split's) as examples, in M3D's prompt and answer formats."""
    return [Example(i.volume_name, "vqa", question_prompt(i.question, i.choices), answer_target(answer_text(i)),
                    i.question_type, i.form) for i in items]


def load_multimodal_split(dataset, cache, split: str, *, tasks, section: str, vqa_items: dict[str, list] | None,
                          with_logits: bool, allow_empty: bool = False) -> MultimodalSplit:
    """Examples of `tasks` for the split's cases, with the cached features (the cache must hold them)."""
    examples: list[Example] = []
    if "report" in tasks:
        examples += report_examples(dataset, split, section)
    if "vqa" in tasks:
        examples += vqa_examples((vqa_items or {}).get(split, []))
    if not examples and not allow_empty:
        raise DatasetError(f"split {split!r} has no examples for tasks {', '.join(tasks)}", dataset.root)
    names = sorted({e.volume_name for e in examples})
    row = {n: i for i, n in enumerate(names)}
    if names:
        latents, logits = cache.stack(names, with_logits=with_logits)
        features = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32))
        logits = None if logits is None else torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    else:
        features, logits = torch.zeros(0, cache.identity.latent_dim), None
    return MultimodalSplit(split, examples, [row[e.volume_name] for e in examples], features, logits)


@dataclass
class MultimodalCollator:
    """Example indices → a batch: features (+ logits) and the spliced prompt's tokens and labels."""

    split: MultimodalSplit
    tokenizer: object
    n_image: int
    max_answer_tokens: int | None = None

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        if not indices:
            raise ConfigError("an empty batch")
        rows = torch.as_tensor([self.split.case_row[i] for i in indices], dtype=torch.long)
        examples = [self.split.examples[i] for i in indices]
        prompts = encode_prompts(self.tokenizer, self.n_image, [e.instruction for e in examples],
                                 [e.answer for e in examples], max_answer_tokens=self.max_answer_tokens)
        batch = {"index": torch.as_tensor(indices), "features": self.split.features[rows],
                 "input_ids": prompts.input_ids, "attention_mask": prompts.attention_mask, "labels": prompts.labels,
                 "image_start": prompts.image_start}
        if self.split.logits is not None:
            batch["logits"] = self.split.logits[rows]
        return batch
