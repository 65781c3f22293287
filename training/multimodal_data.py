"""Training examples of the multimodal system: (case, instruction, answer) over the embedding cache.

Tasks (formats in engine.prompts, M3D's):
- report: instruction "Findings:" (or "Impression:"), answer the report section of the case;
- vqa: instruction the question (closed: with M3D's "Choices: A. .. B. .."), answer the answer
  (closed: "B. Liver"). Items come from a JSONL file, one object a line: volume_name, question,
  choices (a list; empty for an open question), answer (the choice's text or the open answer),
  answer_letter (closed). Each item belongs to its case's split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import ConfigError, DatasetError
from engine.multimodal import encode_prompts
from engine.prompts import answer_target, closed_answer, question_prompt, report_instruction


@dataclass(frozen=True)
class Example:
    volume_name: str
    task: str  # "report" or "vqa"
    instruction: str
    answer: str  # the target text (engine.prompts.answer_target applied)


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


def read_vqa_items(path: str | Path) -> list[dict]:
    """The JSONL file's items, each checked (one DatasetError naming the file and line)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("no such VQA file", path)
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question, answer, choices = str(item["question"]), str(item["answer"]), list(item.get("choices") or [])
            name = str(item["volume_name"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DatasetError(f"line {n} is not a VQA item ({type(err).__name__}: {err})", path) from None
        if not question.strip() or not answer.strip():
            raise DatasetError(f"line {n}: empty question or answer", path)
        if choices:
            letter = str(item.get("answer_letter", ""))
            if letter not in "ABCDEFGH"[: len(choices)] or not letter or choices["ABCDEFGH".index(letter)] != answer:
                raise DatasetError(f"line {n}: answer_letter {letter!r} does not name the answer {answer!r}", path)
        items.append({"volume_name": name, "question": question, "choices": choices, "answer": answer,
                      "answer_letter": item.get("answer_letter")})
    return items


def vqa_examples(items: list[dict], names: set[str]) -> list[Example]:
    """The items about the cases `names` (one split) as examples."""
    out = []
    for item in items:
        if item["volume_name"] not in names:
            continue
        closed = bool(item["choices"])
        answer = closed_answer(item["answer_letter"], item["answer"]) if closed else item["answer"]
        out.append(Example(item["volume_name"], "vqa", question_prompt(item["question"], item["choices"] or None),
                           answer_target(answer)))
    return out


def load_multimodal_split(dataset, cache, split: str, *, tasks, section: str, vqa_items: list[dict] | None,
                          with_logits: bool, allow_empty: bool = False) -> MultimodalSplit:
    """Examples of `tasks` for the split's cases, with the cached features (the cache must hold them)."""
    examples: list[Example] = []
    if "report" in tasks:
        examples += report_examples(dataset, split, section)
    if "vqa" in tasks:
        examples += vqa_examples(vqa_items or [], {c.volume_name for c in dataset.split(split)})
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
