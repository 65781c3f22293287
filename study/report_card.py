"""Writing an evaluation folder (metrics.json, metrics.md, per_case.csv, predictions.csv) and a
comparison (comparison.json, comparison.md), and reading an evaluation folder back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from engine.errors import DatasetError

FILES = ("metrics.json", "metrics.md", "per_case.csv", "predictions.csv")


def _num(v: float, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _json_value(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_evaluation(result, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    result.per_case.to_csv(out / "per_case.csv", index=False)
    doc = dict(result.info)
    doc["metrics"] = [{k: _json_value(v) for k, v in vars(m).items()} for m in result.metrics]
    doc["skipped"] = result.skipped
    (out / "metrics.json").write_text(json.dumps(doc, indent=1))
    (out / "metrics.md").write_text(metrics_markdown(doc))
    if doc.get("provenance"):
        from study.predictions import write_provenance

        write_provenance(out, doc["run"], doc["provenance"])
    return out


def metric_card_lines(card: dict | None) -> list[str]:
    """The metric card as plain lines (the same text in metrics.md, comparison.md and the terminal)."""
    if not card:
        return ["Metric card: none (evaluation written by an older rad3d; text convention unnamed)."]
    bert = card.get("bertscore")
    bert_text = "not computed"
    if bert:
        bert_text = (f"{bert['model']}, layer {bert['layer']}, idf {'on' if bert['idf'] else 'off'}, baseline "
                     f"rescale {'on' if bert['rescale_with_baseline'] else 'off'} ({bert['definition']})")
    lines = [f"Metric card: convention {card['convention']}: {card['convention_description']}."]
    lines += [f"- tokenisation, {what}: {how}" for what, how in card["tokenisation"].items()]
    lines += [f"- averaging, {what}: {how}" for what, how in card["averaging"].items()]
    lines += [f"- BERTScore: {bert_text}",
              f"- finding extractor: {card['extractor']['name']}, version {card['extractor']['version']}"]
    return lines


def metrics_markdown(doc: dict) -> str:
    boot = doc["bootstrap"]
    lines = [
        f"# Metrics: run {doc['run']}, variant {doc['variant']} ({doc['n_cases']} cases)",
        "",
        *metric_card_lines(doc.get("metric_card")),
        "",
        "BERTScore with this encoder is not comparable with roberta-large scores.",
        f"95% CI: {boot['interval']} bootstrap over cases, {boot['resamples']} resamples, seed {boot['seed']}.",
        f"Label set: {doc['label_set']['name']}; uncertain findings count as {doc['uncertain_as']}.",
        *provenance_lines(doc),
        "",
        "| metric | value | 95% CI | implementation |",
        "|---|---|---|---|",
    ]
    for m in doc["metrics"]:
        if m["group"] in ("finding", "classifier-finding"):
            continue
        ci = f"{_num(m['ci_low'])} – {_num(m['ci_high'])}"
        lines.append(f"| {m['label']} | {_num(m['value'])} | {ci} | {m['implementation']} |")
    for s in doc.get("skipped", []):
        lines.append(f"| {s['label']} | — | — | {s['reason']} |")
    lines += ["", "## Per finding (F1, precision, recall)", "", "| finding | F1 | 95% CI | precision | recall |",
              "|---|---|---|---|---|"]
    by_key = {m["key"]: m for m in doc["metrics"]}
    for name in doc["label_set"]["names"]:
        f1 = by_key.get(f"f1:{name}")
        if f1 is None:
            continue
        p, r = by_key[f"precision:{name}"], by_key[f"recall:{name}"]
        lines.append(f"| {name} | {_num(f1['value'])} | {_num(f1['ci_low'])} – {_num(f1['ci_high'])} | "
                     f"{_num(p['value'])} | {_num(r['value'])} |")
    auroc = [m for m in doc["metrics"] if m["group"] == "classifier-finding"]
    if auroc:
        lines += ["", "## Classifier AUROC per finding (cached logits vs labels)", "", "| finding | AUROC | 95% CI |",
                  "|---|---|---|"]
        lines += [f"| {m['label'].removeprefix('AUROC ')} | {_num(m['value'])} | {_num(m['ci_low'])} – "
                  f"{_num(m['ci_high'])} |" for m in auroc]
    return "\n".join(lines) + "\n"


def read_evaluation(folder: str | Path) -> tuple[dict, pd.DataFrame]:
    """metrics.json and per_case.csv of an evaluation folder, with a clear error if either is missing."""
    folder = Path(folder)
    meta_path, cases_path = folder / "metrics.json", folder / "per_case.csv"
    for p in (meta_path, cases_path):
        if not p.is_file():
            raise DatasetError(f"not an evaluation folder (no {p.name}; make one with `rad3d metrics`)", folder)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"unreadable metrics.json ({err})", meta_path) from None
    if "label_set" not in meta or "n_cases" not in meta:
        raise DatasetError("metrics.json lacks label_set or n_cases (not written by rad3d metrics)", meta_path)
    cases = pd.read_csv(cases_path, dtype={"VolumeName": str}, keep_default_na=False, na_values=[""])
    return meta, cases


def _comparison_cards(cards: dict) -> list[str]:
    a, b = cards.get("a"), cards.get("b")
    if a == b:
        return metric_card_lines(a)
    return ["A:", *metric_card_lines(a), "", "B:", *metric_card_lines(b)]


def write_comparison(comparison: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=1, default=_json_value))
    (out / "comparison.md").write_text(comparison_markdown(comparison))
    return out


def comparison_markdown(c: dict) -> str:
    boot = c["bootstrap"]
    lines = [
        f"# Paired comparison: B = {c['b']['label']} vs A = {c['a']['label']} ({c['n_cases']} shared cases)",
        "",
        f"Difference B − A with 95% {boot['interval']} interval and two-sided p-value from a paired bootstrap "
        f"over cases ({boot['resamples']} resamples, seed {boot['seed']}). Text convention: {c['text_convention']}.",
        "",
        *_comparison_cards(c.get("metric_card") or {}),
        "",
        "| metric | A | B | B − A | 95% CI | p |",
        "|---|---|---|---|---|---|",
    ]
    for m in c["metrics"]:
        if m["group"] == "finding":
            continue
        p = m["p_value"]
        p_text = "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.4f}"
        lines.append(f"| {m['label']} | {_num(m['value_a'])} | {_num(m['value_b'])} | {_num(m['difference'])} | "
                     f"{_num(m['ci_low'])} – {_num(m['ci_high'])} | {p_text} |")
    for s in c.get("not_compared", []):
        lines.append(f"| {s['key']} | — | — | — | — | not compared: {s['reason']} |")
    return "\n".join(lines) + "\n"


def provenance_lines(doc: dict) -> list[str]:
    """What the evaluated run was trained on and its licence, when the evaluation records it."""
    from engine.provenance import Provenance

    if not doc.get("provenance"):
        return ["Trained on: not recorded beside these predictions."]
    return [f"{line}." if not line.endswith(".") else line for line in Provenance.from_dict(doc["provenance"]).lines()]
