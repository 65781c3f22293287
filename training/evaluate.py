"""`rad3d evaluate`: a trained run writes a report for every case of a split, from the cached
latents (and logits), in batches; the predictions are then scored by study.metrics.

EVAL/predictions.csv  VolumeName, reference, generated, run, variant, seconds, new_tokens, finished
                      (seconds: the batch's generation time shared equally by its cases)
EVAL/provenance.json  what the run was trained on and its licence (engine.provenance), for every
                      reader of the predictions (`rad3d metrics` and the report card show it)
EVAL/metrics.json, metrics.md, per_case.csv   from study.metrics.evaluate_predictions / write_evaluation
EVAL/shards/          while generating: finished batches (training.prediction_shards), one process's
                      or, under `accelerate launch`, every process's shard; merged, then removed
EVAL/consistency.csv, consistency_cases.csv, consistency.md, consistency.json   each report beside the run's
                      classifier, the paper's Table 5 counts over the split (training.consistency); with
                      --guarded, predictions.csv gains a `guarded` column: the draft and its marks
EVAL/vlm3d_*.json   with --format vlm3d: the VLM3D challenge's files and scores (study.metrics.vlm3d)

The reference is the case's text in the run's report section (Findings unless the run was trained
on another; what the connector learned to write); cases without one are left out and counted.
Greedy decoding unless --beams > 1. When the cache holds classifier logits and the dataset has
labels, the classifier's AUROC per finding and macro (with the same bootstrap) is added.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from engine.errors import ConfigError
from engine.shards import Shard
from training.configs import EvaluateConfig  # defined without torch, for the CLI
from training.consistency import write_consistency  # torch-free until called

PREDICTION_COLUMNS = ("VolumeName", "reference", "generated", "run", "variant", "seconds", "new_tokens", "finished")


def generate_predictions(session, split, *, run_name: str, batch_size: int, settings, indices: list[int] | None = None,
                         progress: bool = True) -> Iterator[pd.DataFrame]:
    """The generated report of each case `indices` of `split` (a training.data.ReportSplit; default
    all), in batches: one table of rows per batch, indexed by the cases' positions in the split."""
    from tqdm.auto import tqdm

    indices = list(range(len(split))) if indices is None else indices
    variant = session.run.config.variant
    bar = tqdm(total=len(indices), desc=f"generate {run_name}", unit="case", disable=not progress)
    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        logits = split.logits[batch] if split.logits is not None else None
        result = session.generate(split.latents[batch], logits, settings)
        per_case = result.seconds / len(batch)
        rows = [{"VolumeName": split.volume_names[i], "reference": split.reports[i], "generated": report.text,
                 "run": run_name, "variant": variant, "seconds": per_case, "new_tokens": report.n_tokens,
                 "finished": report.finished} for i, report in zip(batch, result.reports)]
        yield pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS), index=batch)
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{result.tokens_per_second:.1f}")
    bar.close()


def generate_shards(session, split, config: EvaluateConfig, shard: Shard, *, run_name: str, settings,
                    progress: bool) -> pd.DataFrame | None:
    """This process's shard of the cases not generated yet, written batch by batch under EVAL/shards
    (training.prediction_shards: a rerun resumes); once every shard is done the main process
    returns all predictions in split order, the others None."""
    from training.prediction_shards import PredictionShards

    # What the rows depend on, as every machine sees it (paths may differ between machines).
    job = {"run": run_name, "variant": session.run.config.variant, "split": config.split, "limit": config.limit,
           "cases": len(split), "generation": dataclasses.asdict(settings)}
    parts = PredictionShards(config.out, job)
    done = parts.done()
    shard.wait()  # every process knows what is done before any batch is written: all see the same cases to do
    if shard.is_main:
        parts.start()
    todo = [i for i, name in enumerate(split.volume_names) if name not in done]
    for rows in generate_predictions(session, split, run_name=run_name, batch_size=config.batch_size, settings=settings,
                                     indices=shard.take(todo), progress=progress and shard.is_main):
        parts.write(rows)
    shard.wait()
    return parts.merge(split.volume_names) if shard.is_main else None


def evaluate_run(config: EvaluateConfig, *, progress: bool = True, session=None, shard: Shard | None = None, logits=None):
    """Generate and score; returns (predictions, study EvaluationResult). `session`: a loaded InferenceSession for config.run.
    `shard`: this process's part under `accelerate launch` (engine.shards): each generates its shard, the main one merges and
    scores them, the others return (None, None). `logits` (SyntheticLogits): used instead of the cached ones, once checked."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.inference import InferenceSession
    from study.metrics import evaluate_predictions, write_evaluation
    from study.predictions import write_provenance
    from training.data import check_cache_matches, check_logits_from_classifier, load_report_split
    from training.prediction_shards import remove_shards

    out, shard = Path(config.out), shard or Shard()
    # The dataset is read with the run's label set (label columns that disagree are refused there),
    # from the run's config alone: a refused dataset costs no model load and writes nothing.
    from engine.data.ctrate import SECTION_COLUMNS
    from engine.multimodal_run import is_multimodal_run
    from engine.rundir import open_run

    if session is None and is_multimodal_run(config.run):
        from training.multimodal_evaluate import evaluate_multimodal_run

        return evaluate_multimodal_run(config, progress=progress)
    if config.task == "vqa":
        raise ConfigError("a prefix run writes reports only: --task vqa takes a multimodal run trained for vqa",
                          config.run)
    run_dir = session.run if session is not None else open_run(config.run)
    section = run_dir.config.report_section
    dataset = resolve(config.data, label_set=run_dir.config.label_set,
                      section=section if section in SECTION_COLUMNS else None)
    session = session or InferenceSession.load(config.run, device=config.device if shard.device is None else shard.device)
    run_cfg = session.run.config
    run_name = config.run_name or session.run.root.name
    _refuse_other_run(out / "predictions.csv", run_name, run_cfg.variant)
    what = f"run {session.run.root}"
    if config.output_format == "vlm3d":
        from study.metrics.vlm3d import check_label_set

        check_label_set(session.label_set)  # before any report is generated
    cache = EmbeddingCache.open(config.cache)
    check_cache_matches(cache, encoder_name=run_cfg.encoder.name, encoder_config=run_cfg.encoder.config,
                        encoder_weights=session.run.resolve(run_cfg.encoder.weights),
                        preprocess_config=session.preprocess_config, label_set=session.label_set, what=what)
    section = session.run.config.report_section
    split = load_report_split(dataset, cache, config.split, with_logits=session.generator.uses_logits, limit=config.limit,
                              section=section)
    check_logits_from_classifier(split, session.classifier, session.label_set, cache.root, what=what)
    split = split if logits is None else logits.applied(split, dataset)  # the logit-quality curve
    if split.without_text and shard.is_main:
        print(f"{len(split.without_text)} {config.split} cases have no {section} text; left out")

    settings = dataclasses.replace(session.settings, num_beams=config.beams, **(
        {} if config.max_new_tokens is None else {"max_new_tokens": config.max_new_tokens}))
    predictions = generate_shards(session, split, config, shard, run_name=run_name, settings=settings, progress=progress)
    if predictions is None:  # not the main process: its shard is written
        return None, None
    domain = domain_flags(session, split.latents)
    if domain is not None:  # per case: the feature distance to the run's training scans, and the flag
        predictions["domain_distance"], predictions["outside_domain"] = domain.pop("distances"), domain.pop("outside")
    out.mkdir(parents=True, exist_ok=True)
    write_consistency(predictions, session, dataset, split.latents, config.consistency, out)
    predictions.to_csv(out / "predictions.csv", index=False)
    provenance = session.provenance.to_dict()
    write_provenance(out, run_name, provenance)

    result = evaluate_predictions(predictions, session.label_set, bertscore_model=config.bertscore_model,
                                  bertscore=config.bertscore, meteor=config.meteor, resamples=config.resamples,
                                  seed=config.seed, convention=config.convention, progress=progress,
                                  source=str(out / "predictions.csv"))
    result.metrics += classifier_metrics(dataset, cache, split.volume_names, session.label_set,
                                         resamples=config.resamples, seed=config.seed, logits=split.logits)
    result.info.update({} if logits is None else {"logits": logits.describe()})
    result.info["provenance"] = provenance
    result.info["generation"] = {"split": config.split, "run_dir": str(session.run.root), "device": str(session.device),
                                 "batch_size": config.batch_size, **dataclasses.asdict(settings)}
    if domain is not None:
        result.info["domain_guard"] = domain
    if config.output_format == "vlm3d":
        from study.metrics.vlm3d import in_challenge_order, write_run_files

        labels = [dataset.case(n).labels for n in split.volume_names]
        labels = None if any(lab is None for lab in labels) else in_challenge_order(labels, session.label_set)
        result.info["vlm3d"] = write_run_files(split.volume_names, predictions["generated"].tolist(),
                                               list(split.reports), labels, out, resamples=config.resamples,
                                               seed=config.seed, progress=progress)
    write_evaluation(result, out)
    remove_shards(out)  # the evaluation is whole: a rerun starts afresh
    return predictions, result


def domain_flags(session, latents) -> dict | None:
    """The run's domain guard over an evaluated split's cached latents: per-case distances and flags,
    the threshold and its calibration (the validation split's false-positive rate); None for a run
    without a guard. The body-region half needs the volumes and is checked when a scan is read."""
    import numpy as np

    guard = session.domain_guard
    if guard is None:
        return None
    distances = guard.distance(np.asarray(latents, dtype=np.float64))
    outside = distances > guard.threshold
    return {"distances": distances, "outside": outside, "threshold": float(guard.threshold),
            "calibration": guard.calibration, "flagged": int(outside.sum()), "cases": int(len(distances))}


def classifier_metrics(dataset, cache, names: list[str], label_set, *, resamples: int, seed: int,
                       logits=None) -> list:
    """AUROC metrics of the classifier logits of `names` (`logits`, (N, n_labels) in their order, else the
    cache's) against the dataset's labels (empty when there are no logits or labels)."""
    import numpy as np
    import torch

    from study.metrics.auroc import IMPLEMENTATION, classifier_auroc
    from study.metrics.evaluate import MetricValue

    cases = [dataset.case(n) for n in names]
    if logits is None:
        entries = [cache.get(n) for n in names]
        if any(e.logits is None for e in entries):
            return []
        logits = np.stack([e.logits for e in entries]) if entries else None
    if not cases or any(c.labels is None for c in cases):
        return []
    logits = np.asarray(logits, dtype=np.float32)
    probs = torch.sigmoid(torch.from_numpy(logits)).numpy()
    labels = np.stack([c.labels for c in cases])
    return [MetricValue(m["key"], m["label"], "classifier" if m["key"] == "auroc_macro" else "classifier-finding",
                        m["value"], m["ci_low"], m["ci_high"], IMPLEMENTATION)
            for m in classifier_auroc(probs, labels, list(label_set.names), resamples=resamples, seed=seed)]


def _refuse_other_run(path: Path, run_name: str, variant: str) -> None:
    """An EVAL folder holds one run's predictions: writing another run's over them would mix them."""
    if not path.is_file():
        return
    try:
        old = pd.read_csv(path, usecols=["run", "variant"], dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return  # not a predictions table we wrote: replaced
    others = sorted({f"{r}/{v}" for r, v in zip(old["run"], old["variant"])} - {f"{run_name}/{variant}"})
    if others:
        raise ConfigError(f"holds predictions of another run ({', '.join(others)}); evaluate into a new folder", path.parent)
