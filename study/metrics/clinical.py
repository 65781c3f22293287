"""Clinical correctness from findings extracted out of the generated and reference texts.

- Per finding: precision, recall, F1 of generated (prediction) vs reference (truth) labels, from
  TP/FP/FN summed over cases; a finding with no positive in either text has undefined F1 and is
  left out of the macro average (micro F1 pools all findings).
- GREEN-style approximation (rule-based), not GREEN: per case, matched findings = findings both
  texts state the same way (both positive, or both explicitly negative); clinically significant
  errors = hallucinated positives (positive only in generated) + omitted positives (positive only
  in reference); score = matched / (matched + errors). A case with neither (0/0) has no score and
  is left out of the mean. The corpus value is the mean over scored cases.
`uncertain` counts as positive by default (configurable).
"""

from __future__ import annotations

import numpy as np

from study.findings import FindingStatus

GREEN_STYLE_NAME = "GREEN-style approximation (rule-based), not GREEN"


def status_columns(names) -> tuple[list[str], list[str]]:
    return [f"ref:{n}" for n in names], [f"gen:{n}" for n in names]


def positive(statuses: np.ndarray, uncertain_as: str = "positive") -> np.ndarray:
    """Status strings → bool array; `uncertain` counts as positive unless uncertain_as='negative'."""
    statuses = np.asarray(statuses, dtype=object)
    pos = statuses == FindingStatus.POSITIVE.value
    if uncertain_as == "positive":
        pos |= statuses == FindingStatus.UNCERTAIN.value
    return pos


def negative(statuses: np.ndarray, uncertain_as: str = "positive") -> np.ndarray:
    statuses = np.asarray(statuses, dtype=object)
    neg = statuses == FindingStatus.NEGATIVE.value
    if uncertain_as == "negative":
        neg |= statuses == FindingStatus.UNCERTAIN.value
    return neg


def case_counts(ref: np.ndarray, gen: np.ndarray, uncertain_as: str = "positive") -> dict[str, np.ndarray]:
    """Per case × finding TP/FP/FN (n, k) and per-case GREEN-style matched/errors (n,)."""
    rp, gp = positive(ref, uncertain_as), positive(gen, uncertain_as)
    rn, gn = negative(ref, uncertain_as), negative(gen, uncertain_as)
    tp, fp, fn = rp & gp, gp & ~rp, rp & ~gp
    matched = (tp | (rn & gn)).sum(axis=1)
    errors = (fp | fn).sum(axis=1)
    return {"tp": tp.astype(float), "fp": fp.astype(float), "fn": fn.astype(float),
            "matched": matched.astype(float), "errors": errors.astype(float)}


def prf(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from summed counts (any shape); 0/0 → nan."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return precision, recall, f1


def macro(values: np.ndarray) -> np.ndarray:
    """Mean over findings (last axis) of the defined values."""
    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined.any(-1), np.nansum(values, -1) / np.maximum(defined.sum(-1), 1), np.nan)


def green_style(matched, errors) -> np.ndarray:
    matched, errors = np.asarray(matched, float), np.asarray(errors, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(matched + errors > 0, matched / (matched + errors), np.nan)
