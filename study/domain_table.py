"""The classifier's in-domain / out-of-domain table (the paper's Table 4 shape): each image model
scored on each dataset's test split, macro AUROC with a 95% case-bootstrap interval
(study.metrics.auroc.classifier_auroc, i.e. study.bootstrap.resampled).

An image model's head scores its own label set; a dataset's labels are its own (`--label-set`,
phantom_truth.json, else ct-rate). A cell scores the findings both share, named by count in the
table; a model and a dataset sharing none cannot be combined and are refused in one line, before
any volume is read. Logits come from `rad3d embed`'s cache (one per model and dataset under `work`),
so a rerun resumes and the embedding stays in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.bootstrap import DEFAULT_RESAMPLES
from study.metrics.auroc import IMPLEMENTATION, classifier_auroc


@dataclass(frozen=True)
class DomainCell:
    model: str
    domain: str
    label_set: str
    findings: int  # findings scored: shared by the head and the dataset, both classes present
    cases: int
    auroc: float
    ci_low: float
    ci_high: float


def shared_findings(head_names, data_names, *, model, data) -> list[str]:
    """The findings both label sets hold, in the head's order; one line when there are none."""
    from engine.errors import ConfigError

    shared = [n for n in head_names if n in set(data_names)]
    if not shared:
        raise ConfigError(f"image model {model}'s head and dataset {data}'s labels share no finding "
                          f"(head: {list(head_names)[:4]}..., dataset: {list(data_names)[:4]}...): its logits "
                          "cannot be scored against these labels")
    return shared


def score_cell(model_name: str, image_model, domain: str, data, work: str | Path, *, split: str = "test",
               resamples: int = DEFAULT_RESAMPLES, seed: int = 0, workers: int = 2,
               progress: bool = True) -> DomainCell:
    """One image model on one dataset's `split`: logits through the cache, labels from the dataset."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.embedding import embed_with_image_model
    from engine.errors import DatasetError
    from engine.image_model import open_image_model

    head = open_image_model(image_model, with_encoder=False).label_set
    dataset = resolve(data, section=None)
    shared = shared_findings(head.names, dataset.label_set.names, model=image_model, data=dataset.root)
    cases = [c for c in dataset.cases if c.split == split]
    if not cases or cases[0].labels is None:
        raise DatasetError(f"no labelled cases in split {split!r}", dataset.root)
    cache_dir = Path(work) / f"{model_name}--{domain}"
    embed_with_image_model(data, cache_dir, image_model, splits=(split,), workers=workers, progress=progress)
    _, logits = EmbeddingCache.open(cache_dir).stack([c.volume_name for c in cases], with_logits=True)
    cols = [head.names.index(n) for n in shared]
    probabilities = 1.0 / (1.0 + np.exp(-logits[:, cols].astype(np.float64)))
    labels = np.stack([c.labels for c in cases])[:, [dataset.label_set.names.index(n) for n in shared]]
    rows = classifier_auroc(probabilities, labels, shared, resamples=resamples, seed=seed)
    if not rows:
        raise DatasetError(f"no finding of {shared} has both classes in split {split!r}", dataset.root)
    macro = rows[0]
    return DomainCell(model_name, domain, dataset.label_set.name, len(rows) - 1, len(cases), macro["value"],
                      macro["ci_low"], macro["ci_high"])


def domain_table(models: dict[str, str], datasets: dict[str, object], work: str | Path, **kwargs) -> list[DomainCell]:
    """Every model on every dataset; every pairing checked before any volume is embedded."""
    from engine.data import resolve
    from engine.image_model import open_image_model

    for path in models.values():
        head = open_image_model(path, with_encoder=False).label_set
        for data in datasets.values():
            shared_findings(head.names, resolve(data, section=None).label_set.names, model=path, data=data)
    return [score_cell(m, p, d, data, work, **kwargs) for m, p in models.items() for d, data in datasets.items()]


def format_table(cells: list[DomainCell]) -> str:
    """Markdown: one row per image model, one column per dataset."""
    domains = list(dict.fromkeys(c.domain for c in cells))
    lines = ["| image model | " + " | ".join(f"{d} (test)" for d in domains) + " |",
             "|---|" + "---|" * len(domains)]
    for model in dict.fromkeys(c.model for c in cells):
        by = {c.domain: c for c in cells if c.model == model}
        lines.append(f"| {model} | " + " | ".join(
            f"{by[d].auroc:.3f} [{by[d].ci_low:.3f}, {by[d].ci_high:.3f}] ({by[d].findings} findings, "
            f"{by[d].cases} cases)" if d in by else "" for d in domains) + " |")
    lines.append(f"\nmacro AUROC over the findings shared by the head and the dataset's labels; 95% percentile "
                 f"interval over case resamples; {IMPLEMENTATION}")
    return "\n".join(lines)
