"""An evaluation's report-vs-classifier consistency (study.consistency's Table 5 counts, flags and
guarded-mark F1): the run's classifier scores each evaluated case from its cached latent, and the
dataset's labels are the truth. `rad3d evaluate` writes it beside the metrics; `rad3d consistency`
computes it for an evaluation folder written before (EVAL/predictions.csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.errors import ConfigError
from study.consistency import ConsistencyConfig, ConsistencyTable, evaluation_table, write_table


def evaluation_consistency(predictions: pd.DataFrame, image, dataset, latents,
                           config: ConsistencyConfig | None = None) -> ConsistencyTable:
    """`predictions` (VolumeName, reference, generated), `image` the run's ImageModel (its head and
    thresholds), `latents` (cases, d) in the predictions' order, `dataset` for the reference labels
    (the reference texts' extracted findings when a case has none)."""
    import numpy as np
    import torch

    from study.findings import FindingExtractor

    config = config or ConsistencyConfig()
    names = predictions["VolumeName"].tolist()
    probs = torch.sigmoid(image.classify(torch.as_tensor(np.asarray(latents), dtype=torch.float32))).cpu().numpy()
    labels = [dataset.case(n).labels for n in names] if dataset is not None else [None]
    truth = None if any(lab is None for lab in labels) else np.stack(labels)
    extractor = FindingExtractor(image.label_set)
    return evaluation_table(names, predictions["generated"].fillna("").astype(str).tolist(), probs, image.thresholds,
                            truth, predictions["reference"].fillna("").astype(str).tolist(), extractor,
                            valid_auroc=image.valid_auroc, config=config)


def write_consistency(predictions: pd.DataFrame, session, dataset, latents, config: ConsistencyConfig, out: Path) -> None:
    """`rad3d evaluate`'s part: the table into `out`; with guarded mode, each draft and its marks in a
    `guarded` column of `predictions` (the draft itself stays in `generated`)."""
    table = evaluation_consistency(predictions, session.image, dataset, latents, config)
    write_table(table, out)
    if config.guarded:
        predictions["guarded"] = table.guarded


def consistency_of_folder(eval_dir: str | Path, run: str | Path, data, cache: str | Path,
                          config: ConsistencyConfig | None = None, out: str | Path | None = None) -> ConsistencyTable:
    """The consistency of an evaluation folder's predictions, written into `out` (default the folder)."""
    import numpy as np

    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.image_model import open_image_model
    from engine.rundir import open_run
    from training.data import check_cache_matches

    path = Path(eval_dir) / "predictions.csv"
    if not path.is_file():
        raise ConfigError("no predictions.csv: not an evaluation folder", eval_dir)
    predictions = pd.read_csv(path, dtype={"generated": str, "reference": str}, keep_default_na=False)
    if predictions.empty or not {"VolumeName", "reference", "generated"} <= set(predictions.columns):
        raise ConfigError("needs the columns VolumeName, reference, generated and at least one row", path)
    run_dir = open_run(run, check=False)
    run_cfg = run_dir.config
    dataset = resolve(data, label_set=run_cfg.label_set)
    store = EmbeddingCache.open(cache)
    check_cache_matches(store, encoder_name=run_cfg.encoder.name, encoder_config=run_cfg.encoder.config,
                        encoder_weights=run_dir.resolve(run_cfg.encoder.weights), preprocess_config=run_cfg.preprocess,
                        label_set=run_cfg.label_set, what=f"run {run_dir.root}")
    missing = [n for n in predictions["VolumeName"] if n not in store]
    if missing:
        raise ConfigError(f"the cache lacks {len(missing)} evaluated cases (first {missing[0]})", cache)
    image = open_image_model(run, with_encoder=False)
    latents = np.stack([store.get(n).latent for n in predictions["VolumeName"]])
    table = evaluation_consistency(predictions, image, dataset, latents, config)
    target = Path(out or eval_dir)
    target.mkdir(parents=True, exist_ok=True)
    write_table(table, target)
    return table
