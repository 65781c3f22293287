"""Paired comparison of two evaluation folders on the same cases (`rad3d compare`)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from engine.errors import DatasetError
from study.bootstrap import DEFAULT_RESAMPLES, paired_bootstrap
from study.metrics.evaluate import build_statistics
from study.metrics.meteor import METEOR_STAT_COLUMNS, MeteorJar
from study.report_card import read_evaluation


def _check_same_cases(meta_a, cases_a, meta_b, cases_b, a: Path, b: Path) -> None:
    la, lb = meta_a["label_set"], meta_b["label_set"]
    if la["names"] != lb["names"]:
        raise DatasetError(f"label sets differ: {a} uses {la['name']!r} ({len(la['names'])} findings), "
                           f"{b} uses {lb['name']!r} ({len(lb['names'])} findings)", b)
    if meta_a.get("uncertain_as") != meta_b.get("uncertain_as"):
        raise DatasetError(f"uncertain findings count differently ({meta_a.get('uncertain_as')} in {a}, "
                           f"{meta_b.get('uncertain_as')} in {b}); re-run rad3d metrics with one setting", b)
    ca, cb = meta_a.get("text_convention"), meta_b.get("text_convention")
    if ca != cb:
        raise DatasetError(f"text conventions differ ({_convention_name(ca)} in {a}, {_convention_name(cb)} in {b}); "
                           f"re-run rad3d metrics on both with one --convention", b)
    sa, sb = set(cases_a["VolumeName"]), set(cases_b["VolumeName"])
    if sa != sb:
        only_a, only_b = sorted(sa - sb), sorted(sb - sa)
        show = lambda xs: ", ".join(xs[:5]) + (f" (+{len(xs) - 5} more)" if len(xs) > 5 else "")  # noqa: E731
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} case(s) only in {a}: {show(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} case(s) only in {b}: {show(only_b)}")
        raise DatasetError("case sets differ; " + "; ".join(parts), b)


def _convention_name(value) -> str:
    """The convention's name, or a clear word for an evaluation written before conventions had names."""
    from study.metrics.text import CONVENTIONS

    return repr(value) if value in CONVENTIONS else "an unnamed convention (written by an older rad3d)"


def compare_evaluations(eval_a: str | Path, eval_b: str | Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        progress: bool = False) -> dict:
    """B − A for every metric both evaluations have, with paired-bootstrap 95% CI and p-value."""
    a, b = Path(eval_a), Path(eval_b)
    meta_a, cases_a = read_evaluation(a)
    meta_b, cases_b = read_evaluation(b)
    _check_same_cases(meta_a, cases_a, meta_b, cases_b, a, b)
    cases_b = cases_b.set_index("VolumeName").loc[cases_a["VolumeName"]].reset_index()
    names = meta_a["label_set"]["names"]
    uncertain_as = meta_a.get("uncertain_as", "positive")
    not_compared = []
    enc_a, enc_b = meta_a.get("bertscore_encoder"), meta_b.get("bertscore_encoder")
    if enc_a != enc_b:
        for cases in (cases_a, cases_b):
            cases.drop(columns=["bertscore_f1"], errors="ignore", inplace=True)
        not_compared.append({"key": "bertscore_f1", "reason": f"BERTScore encoders differ ({enc_a} vs {enc_b})"})
    use_meteor = all(c in cases_a and c in cases_b for c in METEOR_STAT_COLUMNS)
    jar = MeteorJar() if use_meteor else None
    try:
        from study.metrics.text import CONVENTIONS

        convention = meta_a.get("text_convention") if meta_a.get("text_convention") in CONVENTIONS else None
        stats_a, table_a = build_statistics(cases_a, names, uncertain_as, jar, enc_a, convention)
        stats_b, table_b = build_statistics(cases_b, names, uncertain_as, jar, enc_b, convention)
        keys_b = {s.key for s in stats_b}
        stats = [s for s in stats_a if s.key in keys_b]
        for s in stats_a + stats_b:
            if s.key not in {t.key for t in stats} and s.key not in {n["key"] for n in not_compared}:
                not_compared.append({"key": s.key, "reason": "present in only one evaluation"})
        paired = paired_bootstrap(table_a, table_b, stats, resamples, seed, progress)
    finally:
        if jar is not None:
            jar.close()
    clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    return {
        "schema": "rad3d-comparison/1",
        "a": {"folder": str(a), "label": f"{meta_a.get('run')}/{meta_a.get('variant')}"},
        "b": {"folder": str(b), "label": f"{meta_b.get('run')}/{meta_b.get('variant')}"},
        "n_cases": int(len(cases_a)),
        "label_set": meta_a["label_set"],
        "text_convention": meta_a.get("text_convention"),
        "metric_card": {"a": meta_a.get("metric_card"), "b": meta_b.get("metric_card")},
        "bootstrap": {"resamples": int(resamples), "seed": int(seed), "level": 0.95, "interval": "percentile",
                      "p_value": "two-sided: min(1, 2·min(#{d*<=0}+1, #{d*>=0}+1)/(R+1))"},
        "metrics": [{"key": s.key, "label": s.label, "group": s.group,
                     **{k: clean(v) for k, v in vars(paired[s.key]).items() if k != "key"}} for s in stats],
        "not_compared": not_compared,
    }


def comparison_frame(comparison: dict) -> pd.DataFrame:
    return pd.DataFrame(comparison["metrics"])
