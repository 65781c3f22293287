"""Cache + reports → training batches. Connectors train on the embedding cache, never the volumes:
each case is its cached latent (and classifier logits for V-3) with one report section as target:
the Findings (the paper's task, default) or the Impression (short; the CPU demo's target).

Checks done here, each a typed error naming what is wrong:
- the cache was made by the image model's encoder and preprocessing (`check_cache_matches`);
- the cache holds every case of the split (EmbeddingCache.require names the missing ones);
- a split has cases with the target section at all;
- cached logits have one value per label of the label set and were written by the image model's
  classifier (recomputed from the cached latents: a stale cache is refused, not trained on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from engine.cache import EmbeddingCache
from engine.errors import ConfigError, DatasetError
from engine.model import encode_reports


@dataclass
class ReportSplit:
    """One split's cases, in dataset order: cached inputs and the report text to learn."""

    name: str
    volume_names: list[str]
    latents: torch.Tensor  # (N, d_embed) float32
    logits: torch.Tensor | None  # (N, n_labels) float32, or None for variants without logits
    reports: list[str]
    without_text: list[str] = field(default_factory=list)  # cases left out: no text in the section

    def __len__(self) -> int:
        return len(self.volume_names)


def load_report_split(
    dataset,
    cache: EmbeddingCache,
    split: str,
    *,
    with_logits: bool,
    limit: int | None = None,
    allow_empty: bool = False,
    section: str = "findings",
) -> ReportSplit:
    """The cases of `split` whose report has `section` ("findings" or "impression"), with their
    cached latents (and logits). DatasetError when none is left (unless allow_empty); ConfigError
    naming the cases the cache lacks."""
    text = section_text(section)
    cases = dataset.split(split)
    usable = [c for c in cases if text(c)]
    without = [c.volume_name for c in cases if not text(c)]
    if limit is not None:
        usable = usable[:limit]
    if not usable:
        if allow_empty:
            return ReportSplit(split, [], torch.zeros(0, cache.identity.latent_dim), None, [], without)
        detail = f" ({len(without)} cases there have no {section} text)" if without else ""
        raise DatasetError(f"split {split!r} has no cases with {section} text{detail}", dataset.root)
    names = [c.volume_name for c in usable]
    latents, logits = cache.stack(names, with_logits=with_logits)
    return ReportSplit(
        name=split,
        volume_names=names,
        latents=torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)),
        logits=None if logits is None else torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)),
        reports=[text(c) for c in usable],
        without_text=without,
    )


REPORT_SECTIONS = ("findings", "impression")


def section_text(section: str):
    """The function reading `section` of a dataset case."""
    if section not in REPORT_SECTIONS:
        raise ConfigError(f"unknown report section {section!r} (known: {', '.join(REPORT_SECTIONS)})")
    return (lambda case: case.findings) if section == "findings" else (lambda case: case.impression)


def check_cache_matches(cache: EmbeddingCache, *, encoder_name: str, encoder_config: dict, encoder_weights: str | Path,
                        preprocess_config, label_set, what: str) -> None:
    """Refuse a cache made with another encoder, preprocessing or label set than `what` (the image
    model or run whose encoder spec is given) uses: its latents would not be what inference sees."""
    from engine.embedding import encoder_identity

    problems = []
    ours = encoder_identity(encoder_name, encoder_config, encoder_weights)
    if cache.identity.encoder != ours:
        problems.append(f"encoder: cache has {cache.identity.encoder!r}, {what} has {ours!r}")
    if cache.identity.preprocess != preprocess_config.fingerprint():
        problems.append(f"preprocessing: cache has {cache.identity.preprocess!r}, {what} has {preprocess_config.fingerprint()!r}")
    if cache.identity.label_set is not None and cache.identity.label_set != label_set.name:
        problems.append(f"label set: cache logits are for {cache.identity.label_set!r}, {what} uses {label_set.name!r}")
    if problems:
        raise ConfigError("embedding cache does not match " + what + ": " + "; ".join(problems), cache.root)


@torch.no_grad()
def check_logits_from_classifier(split: ReportSplit, classifier: torch.nn.Module, label_set, cache_root, *,
                                 what: str, atol: float = 1e-2) -> None:
    """The cached logits must be this classifier's output on the cached latents (its label count
    and values): V-3 learns to read them, so logits from another head would silently mislead it."""
    if split.logits is None or len(split) == 0:
        return
    if split.logits.shape[1] != len(label_set):
        raise ConfigError(
            f"cached logits have {split.logits.shape[1]} values per case, label set {label_set.name!r} of "
            f"{what} has {len(label_set)}", cache_root)
    import copy

    head = copy.deepcopy(classifier).float().eval().cpu()  # a copy: the caller's may live on the GPU
    expected = head(split.latents)
    if expected.shape != split.logits.shape:
        raise ConfigError(f"classifier of {what} gives {expected.shape[1]} logits, the cache holds "
                          f"{split.logits.shape[1]}", cache_root)
    err = (expected - split.logits).abs().amax(dim=1)
    bad = [n for n, e in zip(split.volume_names, err.tolist()) if e > atol * (1 + float(expected.abs().max()))]
    if bad:
        raise ConfigError(
            f"cached logits of {len(bad)} case(s) (first: {bad[0]}) are not the output of the classifier of "
            f"{what}; rewrite them with `rad3d train-classifier` (or `rad3d embed --run`) for that classifier",
            cache_root)


class _CaseIndex(Dataset):
    """Index-only dataset: the collate function reads the (small, in-memory) split tensors."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@dataclass
class ReportCollator:
    """Indices → a batch: latents (+ logits), right-padded report tokens ending in EOS."""

    split: ReportSplit
    tokenizer: object
    max_report_tokens: int | None = None

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        input_ids, attention_mask = encode_reports(
            self.tokenizer, [self.split.reports[i] for i in indices], self.max_report_tokens
        )
        batch = {"index": idx, "latent": self.split.latents[idx], "input_ids": input_ids,
                 "attention_mask": attention_mask}
        if self.split.logits is not None:
            batch["logits"] = self.split.logits[idx]
        return batch


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """The batches of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees exactly
    the batches an uninterrupted one would. The last batch may be smaller."""
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).tolist()
    else:
        order = list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def batch_loader(split: ReportSplit, collator: ReportCollator, batches: list[list[int]], *, seed: int) -> DataLoader:
    """A DataLoader over fixed batches. Its own generator keeps it from drawing on the global RNG
    (which dropout uses), so resuming does not shift random streams."""
    return DataLoader(_CaseIndex(len(split)), batch_sampler=batches, collate_fn=collator,
                      generator=torch.Generator().manual_seed(seed))
