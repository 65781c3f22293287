"""`rad3d evaluate` for a multimodal run (engine.multimodal_run): the split's VQA items (`--task vqa`)
or reports (`--task report`) generated in batches from the cached image features, then scored.

--task vqa     EVAL/vqa_predictions.csv  vqa.csv's columns + Prediction, run, seconds, new_tokens
               EVAL/vqa_per_item.csv, vqa_metrics.csv (tidy, with intervals), vqa_metrics.md
               (study.metrics.vqa: M3D's closed accuracy and open BLEU-1/ROUGE-1/METEOR/BERTScore per
               question type, the volume bootstrap)
--task report  EVAL/predictions.csv and the report metrics as for a prefix run (study.metrics), so
               `rad3d compare` sets it beside V-3 on the same cases
A text-only baseline run (`train-multimodal --no-image`) is evaluated the same way; its image features
are read but not used. Greedy decoding with the run's settings (--max-new-tokens caps it).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import ConfigError
from training.configs import EvaluateConfig


def evaluate_multimodal_run(config: EvaluateConfig, *, progress: bool = True, session=None):
    """(predictions table, result): result a study.metrics.vqa.VqaEvaluation (vqa) or EvaluationResult (report)."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.multimodal_run import open_multimodal_run
    from engine.rundir import load_image_model
    from training.data import check_cache_matches

    run = session.run if session is not None else open_multimodal_run(config.run)
    task = config.task or ("vqa" if "vqa" in run.config.tasks else "report")
    if task not in run.config.tasks:
        raise ConfigError(f"run {run.root.name} was trained for {', '.join(run.config.tasks)} only, not {task}", run.root)
    if config.baseline and not (Path(config.baseline) / "vqa_metrics.csv").is_file():
        raise ConfigError("no vqa_metrics.csv (evaluate the baseline run with --task vqa first)", config.baseline)
    _, image = load_image_model(run.root)
    section = run.config.report_section if task == "report" else None
    dataset = resolve(config.data, label_set=image.label_set, **({"section": section} if section else {}))
    cache = EmbeddingCache.open(config.cache)
    check_cache_matches(cache, encoder_name=image.encoder.name, encoder_config=image.encoder.config,
                        encoder_weights=image.encoder.weights, preprocess_config=image.preprocess,
                        label_set=image.label_set, what=f"run {run.root}")
    if task == "vqa":
        from engine.vqa import dataset_vqa

        items = dataset_vqa(dataset)[config.split][: config.limit]
        if not items:
            raise ConfigError(f"split {config.split!r} has no VQA items", dataset.root)
    else:
        from training.multimodal_data import report_examples

        items = report_examples(dataset, config.split, run.config.report_section)[: config.limit]
    if session is None:
        from engine.multimodal_session import MultimodalSession

        session = MultimodalSession.load(run.root, device=config.device)
    settings = dataclasses.replace(session.settings, **(
        {} if config.max_new_tokens is None else {"max_new_tokens": config.max_new_tokens}))
    run_name = config.run_name or run.root.name
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if task == "vqa":
        return _vqa(items, session, cache, config, settings, run_name, out, progress)
    return _reports(items, session, cache, config, settings, run_name, out, progress)


def generate_answers(session, cache, names: list[str], instructions: list[str], *, batch_size: int, settings,
                     desc: str, progress: bool) -> pd.DataFrame:
    """One generated text per (volume, instruction), in batches from the cached features: text,
    seconds (the batch's time shared by its rows), new_tokens, finished."""
    from tqdm.auto import tqdm

    with_logits = bool(session.run.config.model.connector.n_labels)
    rows = []
    bar = tqdm(total=len(names), desc=desc, unit="item", disable=not progress)
    for start in range(0, len(names), batch_size):
        batch = slice(start, start + batch_size)
        latents, logits = cache.stack(names[batch], with_logits=with_logits)
        tick = time.perf_counter()
        result = session.generate(np.asarray(latents, dtype=np.float32), logits, instructions[batch], settings)
        share = (time.perf_counter() - tick) / len(result.reports)
        rows += [{"text": r.text, "seconds": share, "new_tokens": r.n_tokens, "finished": r.finished}
                 for r in result.reports]
        bar.update(len(result.reports))
    bar.close()
    return pd.DataFrame(rows, columns=["text", "seconds", "new_tokens", "finished"])


def _vqa(items, session, cache, config: EvaluateConfig, settings, run_name: str, out: Path, progress: bool):
    from engine.prompts import question_prompt
    from study.metrics.vqa import evaluate_vqa, predictions_frame

    answers = generate_answers(session, cache, [i.volume_name for i in items],
                               [question_prompt(i.question, i.choices) for i in items], batch_size=config.batch_size,
                               settings=settings, desc=f"answer {run_name}", progress=progress)
    frame = predictions_frame(items, answers["text"].tolist())
    frame["run"] = run_name
    frame[["seconds", "new_tokens", "finished"]] = answers[["seconds", "new_tokens", "finished"]].to_numpy()
    frame.to_csv(out / "vqa_predictions.csv", index=False)
    result = evaluate_vqa(frame, meteor=config.meteor, bertscore=config.bertscore, resamples=config.resamples,
                          seed=config.seed)
    result.per_item.to_csv(out / "vqa_per_item.csv", index=False)
    result.table.assign(run=run_name).to_csv(out / "vqa_metrics.csv", index=False)
    (out / "vqa_metrics.md").write_text(f"# VQA: {run_name} ({config.split} split, {len(items)} items)\n\n"
                                        + result.markdown)
    return frame, result


def _reports(examples, session, cache, config: EvaluateConfig, settings, run_name: str, out: Path, progress: bool):
    from study.metrics import evaluate_predictions, write_evaluation
    from training.evaluate import PREDICTION_COLUMNS

    names = [e.volume_name for e in examples]
    answers = generate_answers(session, cache, names, [e.instruction for e in examples], batch_size=config.batch_size,
                               settings=settings, desc=f"generate {run_name}", progress=progress)
    predictions = pd.DataFrame({"VolumeName": names, "reference": [e.answer.strip() for e in examples],
                                "generated": answers["text"], "run": run_name, "variant": "multimodal",
                                "seconds": answers["seconds"], "new_tokens": answers["new_tokens"],
                                "finished": answers["finished"]}, columns=list(PREDICTION_COLUMNS))
    predictions.to_csv(out / "predictions.csv", index=False)
    result = evaluate_predictions(predictions, session.image.label_set, bertscore_model=config.bertscore_model,
                                  bertscore=config.bertscore, meteor=config.meteor, resamples=config.resamples,
                                  seed=config.seed, convention=config.convention, progress=progress,
                                  source=str(out / "predictions.csv"))
    result.info["generation"] = {"split": config.split, "run_dir": str(session.run.root), "task": "report",
                                 "batch_size": config.batch_size, **dataclasses.asdict(settings)}
    write_evaluation(result, out)
    return predictions, result


def side_by_side(tables: dict[str, pd.DataFrame], metric: str = "accuracy") -> str:
    """One metric per question type for several evaluations (name → vqa_metrics.csv table) as a
    markdown table, each value with its interval: e.g. a run beside its text-only baseline."""
    keys = None
    for table in tables.values():
        rows = table[table["metric"] == metric]
        found = list(zip(rows["form"], rows["question_type"]))
        keys = found if keys is None else [k for k in keys if k in found]
    lines = ["| form | question type | " + " | ".join(tables) + " |", "|---|---|" + "---|" * len(tables)]
    for form, qtype in keys or []:
        cells = []
        for table in tables.values():
            r = table[(table["metric"] == metric) & (table["form"] == form) & (table["question_type"] == qtype)].iloc[0]
            cells.append(f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        lines.append(f"| {form} | {qtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{metric}, means over items with 95% bootstrap intervals (volumes resampled).\n"
