"""Two evaluations of one test split side by side, as the Research tab opens on them: a folder
holding comparison.json (`rad3d compare A B --out DIR`, A the reference run) and the two evaluation
folders it names (`rad3d metrics` / `rad3d evaluate` output, looked for beside it by name when the
recorded path is gone, e.g. after the folder was copied). Free of any UI toolkit."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

COMPARISON = "comparison.json"
CLINICAL_FIRST = ("f1_macro", "f1_micro", "green_style")


@dataclass(frozen=True)
class SideBySide:
    title: str  # one line: the two runs, the cases, the bootstrap
    report_level: pd.DataFrame  # metric | A (95% CI) | B (95% CI) | B − A (95% CI) | p
    per_finding: pd.DataFrame  # the same for each finding's F1


def is_comparison(folder: Path | None) -> bool:
    return folder is not None and (Path(folder) / COMPARISON).is_file()


def _evaluation_folder(recorded: str, folder: Path) -> Path:
    path = Path(recorded)
    return path if (path / "metrics.json").is_file() else folder / path.name


def _interval(value, low, high) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def _run_name(meta: dict, fallback: str) -> str:
    variant = str(meta.get("variant") or "")
    return f"V-{variant[1:]}" if variant[:1].lower() == "v" and variant[1:].isdigit() else (variant or fallback)


def side_by_side(folder: str | Path) -> SideBySide:
    """The comparison in `folder` with each run's own value and 95% interval beside the paired
    difference (DatasetError naming the file when a part is missing)."""
    from study.report_card import read_evaluation

    folder = Path(folder)
    doc = json.loads((folder / COMPARISON).read_text())
    meta_a, _ = read_evaluation(_evaluation_folder(doc["a"]["folder"], folder))
    meta_b, _ = read_evaluation(_evaluation_folder(doc["b"]["folder"], folder))
    name_a, name_b = _run_name(meta_a, "A"), _run_name(meta_b, "B")
    own = [{m["key"]: m for m in meta.get("metrics", [])} for meta in (meta_a, meta_b)]
    rows, per_finding = [], []
    for m in doc["metrics"]:
        a, b = own[0].get(m["key"], {}), own[1].get(m["key"], {})
        p = m.get("p_value")
        row = {name_a: _interval(m["value_a"], a.get("ci_low"), a.get("ci_high")),
               name_b: _interval(m["value_b"], b.get("ci_low"), b.get("ci_high")),
               f"{name_b} − {name_a}": _interval(m["difference"], m.get("ci_low"), m.get("ci_high")),
               "p": "n/a" if p is None or not math.isfinite(p) else f"{p:.3f}"}
        if m.get("group") == "finding":
            if str(m["key"]).startswith("f1:"):
                per_finding.append({"finding": m["key"][3:], **row})
        else:
            rows.append({"metric": m["label"], **row})
    # the method's claim first: clinical accuracy (finding F1, GREEN-style), then the text metrics
    lead = {m["label"] for m in doc["metrics"] if m["key"] in CLINICAL_FIRST}
    rows = [r for r in rows if r["metric"] in lead] + [r for r in rows if r["metric"] not in lead]
    boot = doc.get("bootstrap", {})
    title = (f"{name_b} against {name_a} on the same {doc['n_cases']} cases: each run's value with its 95% "
             f"interval, and the paired difference with its 95% {boot.get('interval', '')} interval and "
             f"two-sided p ({boot.get('resamples', '?')} paired bootstrap resamples over cases). "
             f"Text convention: {doc.get('text_convention', '?')}.")
    return SideBySide(title, pd.DataFrame(rows), pd.DataFrame(per_finding))
