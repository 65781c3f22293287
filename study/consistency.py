"""Does a draft report say what its own classifier scores? Per case, each finding's statement in the
draft (study.findings: positive, negative, uncertain, not mentioned, with the sentence that says it)
beside the classifier's probability and threshold; over an evaluation, the paper's Table 5
dependency analysis counted over every case of a split.

The rule of a disagreement (per finding; `ConsistencyConfig` holds its settings):
- the classifier is *confident* about a finding only when it can call it at all (threshold below 1)
  and is not weak on it (validation AUROC at least `min_auroc`; unknown counts as not weak); then it
  scores the finding *confidently high* when logit(p) ≥ logit(threshold) + margin and *confidently
  low* when logit(p) ≤ logit(threshold) − margin (margin in logit units: the odds are e^margin
  times the threshold's odds, or less than 1/e^margin of them);
- the draft *asserts against* the classifier when it states the finding positive and the score is
  confidently low; it *denies* it when it states it negative and the score is confidently high; it
  *omits* it when it does not mention it and the score is confidently high;
- an uncertain (hedged) statement is never a disagreement: the draft already asks the reader to look.

Guarded mode marks each disagreement in the draft for the reader with one line per finding starting
with GUARD_MARK, after the draft; the draft's own text is never changed.

Table 5 over an evaluation (per finding, per case; the report's statement read as the project's finding
F1 reads it: positive or uncertain is positive; the classifier's call is engine.classifier.at_threshold;
the truth is the reference label):
- agreement: the report's call equals the classifier's and the reference;
- report follows a wrong classifier: both calls equal, and differ from the reference;
- report overrides classifier, correctly: the calls differ and the report's equals the reference;
- report overrides classifier, incorrectly: the calls differ and the classifier's equals the reference.

Torch-free at import (the CLI builds its options from ConsistencyConfig): the classifier's rule is
imported where it is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.config import JsonConfig, setting
from engine.errors import ConfigError
from study.findings import FindingExtractor, FindingStatus, Mention

if TYPE_CHECKING:
    import pandas as pd

GUARD_MARK = "⚑ Classifier:"
ASSERTS, DENIES, OMITS = "asserts", "denies", "omits"  # the draft's disagreements with its classifier
DEPENDENCY = ("agreement", "follows_wrong_classifier", "overrides_correctly", "overrides_incorrectly")
DEPENDENCY_LABELS = {"agreement": "agreement (both right)", "follows_wrong_classifier": "report follows a wrong classifier",
                     "overrides_correctly": "report overrides classifier, correctly",
                     "overrides_incorrectly": "report overrides classifier, incorrectly"}


@dataclass(frozen=True)
class ConsistencyConfig(JsonConfig):
    margin: float = setting(1.0, "how far (in logit units) a probability must lie above or below its finding's "
                            "threshold for the classifier to count as confident about it")
    min_auroc: float = setting(0.7, "the classifier is never confident about a finding whose validation AUROC "
                               "is below this (the app's ⚠ weak findings)")
    guarded: bool = setting(False, "guarded drafts: mark each finding the classifier scores confidently but the "
                            "draft omits, denies or asserts against, on a line after the draft (never rewritten)",
                            flag="--guarded")

    def __post_init__(self):
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigError(f"consistency margin must be a finite number ≥ 0, not {self.margin}")
        if not 0 <= self.min_auroc <= 1:
            raise ConfigError(f"consistency min AUROC must lie in [0, 1], not {self.min_auroc}")


@dataclass(frozen=True)
class FindingCheck:
    finding: str
    statement: FindingStatus  # what the draft says
    probability: float
    threshold: float
    positive: bool  # the classifier's call (engine.classifier.at_threshold)
    confidence: str  # "high" | "low" | "unsure" (within the margin) | "weak" (never confident)
    disagreement: str | None  # ASSERTS | DENIES | OMITS | None
    sentence: str | None  # the draft's sentence that makes the statement (None: not mentioned)
    span: tuple[int, int] | None  # that sentence's characters in the draft

    def mark(self) -> str | None:
        """The guarded mode's line for this finding (None: nothing to mark)."""
        if self.disagreement is None:
            return None
        score = f"p = {self.probability:.2f}, threshold {self.threshold:.2f}"
        if self.disagreement == ASSERTS:
            return f"{GUARD_MARK} {self.finding} scored confidently low ({score}); the draft reports it."
        said = "does not mention it" if self.disagreement == OMITS else "reports it absent"
        return f"{GUARD_MARK} {self.finding} scored confidently high ({score}); the draft {said}."


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def confidence(probability: float, threshold: float, auroc: float | None, config: ConsistencyConfig) -> str:
    """'high', 'low', 'unsure' or 'weak' by the module's rule."""
    if threshold >= 1 or (auroc is not None and auroc < config.min_auroc):
        return "weak"
    gap = _logit(probability) - _logit(threshold)
    return "high" if gap >= config.margin else "low" if gap <= -config.margin else "unsure"


def disagreement(statement: FindingStatus, confident: str) -> str | None:
    if confident == "low" and statement == FindingStatus.POSITIVE:
        return ASSERTS
    if confident == "high" and statement == FindingStatus.NEGATIVE:
        return DENIES
    if confident == "high" and statement == FindingStatus.NOT_MENTIONED:
        return OMITS
    return None


def _sentences(text: str, mentions: list[Mention], status: dict[str, FindingStatus]) -> dict[str, tuple]:
    """Per finding, the sentence (and its span in `text`) of the first mention whose status is the report's."""
    out, cursor = {}, 0
    for m in mentions:
        at = text.find(m.sentence, cursor)
        at = text.find(m.sentence) if at < 0 else at
        if at >= 0:
            cursor = at  # mentions come in sentence order; the next may share this sentence
        if m.finding not in out and m.status == status[m.finding]:
            out[m.finding] = (m.sentence, (at, at + len(m.sentence)) if at >= 0 else None)
    return out


def check_case(text: str, probabilities: Sequence[float], thresholds: Sequence[float], extractor: FindingExtractor,
               *, valid_auroc: dict[str, float | None] | None = None,
               config: ConsistencyConfig = ConsistencyConfig()) -> list[FindingCheck]:
    """Every finding of the extractor's label set, in its order: the draft's statement beside the score."""
    from engine.classifier import at_threshold

    names = extractor.label_set.names
    if len(probabilities) != len(names) or len(thresholds) != len(names):
        raise ConfigError(f"{len(probabilities)} probabilities and {len(thresholds)} thresholds for "
                          f"{len(names)} findings")
    text = text or ""
    status = extractor.extract(text)
    where = _sentences(text, extractor.mentions(text), status)
    calls = at_threshold(probabilities, thresholds)
    out = []
    for i, name in enumerate(names):
        p, t = float(probabilities[i]), float(thresholds[i])
        conf = confidence(p, t, (valid_auroc or {}).get(name), config)
        sentence, span = where.get(name, (None, None))
        out.append(FindingCheck(name, status[name], p, t, bool(calls[i]), conf, disagreement(status[name], conf),
                                sentence, span))
    return out


def flagged(checks: list[FindingCheck]) -> list[FindingCheck]:
    return [c for c in checks if c.disagreement is not None]


def guarded_text(text: str, checks: list[FindingCheck]) -> str:
    """The draft, unchanged, followed by one marked line per disagreement (none: the draft itself)."""
    marks = [c.mark() for c in flagged(checks)]
    return text if not marks else (text.rstrip() + "\n" + "\n".join(marks))


def check_to_dict(c: FindingCheck) -> dict:
    return {"finding": c.finding, "statement": c.statement.value, "probability": c.probability,
            "threshold": c.threshold, "positive": c.positive, "confidence": c.confidence,
            "disagreement": c.disagreement, "sentence": c.sentence, "span": list(c.span) if c.span else None}


# -- over an evaluation ------------------------------------------------------------------------------
def report_positive(statuses) -> np.ndarray:
    """The report's call as the project's finding F1 reads it: positive or uncertain."""
    s = np.asarray(statuses, dtype=object)
    return (s == FindingStatus.POSITIVE.value) | (s == FindingStatus.UNCERTAIN.value)


def dependency(report: np.ndarray, classifier: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """(cases, findings) bool calls → per finding counts of each Table 5 category (DEPENDENCY)."""
    report, classifier, truth = (np.asarray(a, dtype=bool) for a in (report, classifier, truth))
    same = report == classifier
    return {"agreement": (same & (report == truth)).sum(0), "follows_wrong_classifier": (same & (report != truth)).sum(0),
            "overrides_correctly": (~same & (report == truth)).sum(0),
            "overrides_incorrectly": (~same & (classifier == truth)).sum(0)}


def finding_f1(generated: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per finding F1, macro (over findings with a positive in either) and micro F1 of (cases,
    findings) bool calls, as study.metrics.clinical counts them."""
    from study.metrics import clinical

    g, r = np.asarray(generated, bool), np.asarray(reference, bool)
    tp, fp, fn = (g & r).sum(0), (g & ~r).sum(0), (~g & r).sum(0)
    per = clinical.prf(tp, fp, fn)[2]
    return per, float(clinical.macro(per)), float(clinical.prf(tp.sum(), fp.sum(), fn.sum())[2])


@dataclass
class ConsistencyTable:
    findings: pd.DataFrame  # one row per finding, then "all findings"
    cases: pd.DataFrame  # one row per case × finding: statement, score, calls, truth, disagreement
    summary: dict  # settings, truth source, finding F1 with and without the guarded marks
    guarded: list[str]  # each case's draft with its guarded marks (the draft itself when none)


def evaluation_table(names: Sequence[str], generated: Sequence[str], probabilities, thresholds, truth,
                     reference_texts: Sequence[str], extractor: FindingExtractor, *,
                     valid_auroc: dict[str, float | None] | None = None, config: ConsistencyConfig = ConsistencyConfig(),
                     truth_source: str = "reference labels") -> ConsistencyTable:
    """The consistency of every case of an evaluation. `names` the cases; `probabilities` (cases,
    findings); `truth` (cases, findings) 0/1 reference labels, or None to read them from the reference
    texts. Finding F1 is scored against the reference texts' extracted findings (as metrics.json's
    finding F1), once on the drafts and once with each guarded mark replacing the draft's statement of its
    finding (omits/denies → positive, asserts → negative)."""
    import pandas as pd

    labels = list(extractor.label_set.names)
    probabilities = np.asarray(probabilities, dtype=float)
    checks = [check_case(text, p, thresholds, extractor, valid_auroc=valid_auroc, config=config)
              for text, p in zip(generated, probabilities)]
    statuses = np.array([[c.statement.value for c in row] for row in checks], dtype=object).reshape(len(checks), len(labels))
    ref_pos = report_positive(np.array([[s.value for s in extractor.extract(t).values()] for t in reference_texts],
                                       dtype=object).reshape(len(checks), len(labels)))
    if truth is None:
        truth, truth_source = ref_pos, "reference report text (extracted)"
    truth = np.asarray(truth, dtype=float).astype(bool)
    report = report_positive(statuses)
    classifier = np.array([[c.positive for c in row] for row in checks], dtype=bool).reshape(report.shape)
    kinds = np.array([[c.disagreement or "" for c in row] for row in checks], dtype=object).reshape(report.shape)
    marked = np.where(np.isin(kinds, [OMITS, DENIES]), True, np.where(kinds == ASSERTS, False, report))
    counts = dependency(report, classifier, truth)
    f1_draft, macro_draft, micro_draft = finding_f1(report, ref_pos)
    f1_marked, macro_marked, micro_marked = finding_f1(marked, ref_pos)
    rows = []
    for j, name in enumerate(labels + ["all findings"]):
        col = slice(None) if j == len(labels) else j
        flags = kinds[:, col]
        rows.append({"finding": name, "cases": int(report.shape[0]) * (len(labels) if j == len(labels) else 1),
                     "reference_positive": int(truth[:, col].sum()), "classifier_positive": int(classifier[:, col].sum()),
                     "report_positive": int(report[:, col].sum()),
                     **{k: int(np.sum(v) if j == len(labels) else v[j]) for k, v in counts.items()},
                     "flag_asserts": int((flags == ASSERTS).sum()), "flag_denies": int((flags == DENIES).sum()),
                     "flag_omits": int((flags == OMITS).sum()),
                     "flags_classifier_right": int(((flags != "") & (classifier[:, col] == truth[:, col])).sum()),
                     "f1_draft": macro_draft if j == len(labels) else f1_draft[j],
                     "f1_marked": macro_marked if j == len(labels) else f1_marked[j]})
    cases = pd.DataFrame([{"VolumeName": n, **check_to_dict(c), "reference": bool(truth[i, k])}
                          for i, (n, row) in enumerate(zip(names, checks)) for k, c in enumerate(row)])
    summary = {"cases": int(report.shape[0]), "truth": truth_source, "settings": config.to_dict(),
               "f1_reference": "reference report text (extracted; uncertain counts as positive)",
               "finding_f1_macro": {"draft": macro_draft, "marked": macro_marked},
               "finding_f1_micro": {"draft": micro_draft, "marked": micro_marked},
               "flagged_cases": int((kinds != "").any(axis=1).sum())}
    return ConsistencyTable(pd.DataFrame(rows), cases, summary,
                            [guarded_text(text, row) for text, row in zip(generated, checks)])


def table_markdown(table: ConsistencyTable) -> str:
    """consistency.md: the Table 5 counts per finding, the flags and finding F1 with and without the marks."""
    s, cfg = table.summary, table.summary["settings"]
    head = ["finding", "ref +", "clf +", "report +", *(DEPENDENCY_LABELS[k] for k in DEPENDENCY),
            "flags (asserts/denies/omits)", "flags where classifier right", "F1 draft", "F1 marked"]
    lines = [f"# Report vs classifier consistency ({s['cases']} cases)", "",
             f"Truth: {s['truth']}. Report call: positive or uncertain (study.findings); classifier call: "
             f"probability ≥ threshold. Confident: |logit(p) − logit(threshold)| ≥ {cfg['margin']:g}, "
             f"threshold < 1, validation AUROC ≥ {cfg['min_auroc']:g}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.findings.to_dict("records"):
        f1 = [("–" if not np.isfinite(r[k]) else f"{r[k]:.3f}") for k in ("f1_draft", "f1_marked")]
        lines.append("| " + " | ".join([r["finding"], str(r["reference_positive"]), str(r["classifier_positive"]),
                                        str(r["report_positive"]), *(str(r[k]) for k in DEPENDENCY),
                                        f"{r['flag_asserts']}/{r['flag_denies']}/{r['flag_omits']}",
                                        str(r["flags_classifier_right"]), *f1]) + " |")
    ma, mi = s["finding_f1_macro"], s["finding_f1_micro"]
    lines += ["", f"Finding F1 against the {s['f1_reference']}: macro {ma['draft']:.3f} on the drafts, "
              f"{ma['marked']:.3f} when each guarded mark replaces the draft's statement of its finding; micro "
              f"{mi['draft']:.3f} → {mi['marked']:.3f}. Cases with at least one flag: {s['flagged_cases']}."]
    return "\n".join(lines) + "\n"


def write_table(table: ConsistencyTable, out) -> None:
    """EVAL/consistency.csv (per finding), consistency_cases.csv (per case × finding), consistency.md/json."""
    import json
    from pathlib import Path

    out = Path(out)
    table.findings.to_csv(out / "consistency.csv", index=False)
    table.cases.to_csv(out / "consistency_cases.csv", index=False)
    (out / "consistency.md").write_text(table_markdown(table))
    (out / "consistency.json").write_text(json.dumps(table.summary, indent=1))


# -- `rad3d report` (engine's command, handed this by cli.wiring: engine may not import study) --------
def flag_line(c: FindingCheck) -> str:
    """One flagged finding for a reader, its sentence between » «."""
    score = f"p = {c.probability:.2f}, threshold {c.threshold:.2f}"
    said = {ASSERTS: "the draft reports it; the classifier scores it confidently low",
            DENIES: "the draft reports it absent; the classifier scores it confidently high",
            OMITS: "the draft does not mention it; the classifier scores it confidently high"}[c.disagreement]
    where = f": »{c.sentence}«" if c.sentence else ""
    return f"⚑ {c.finding} ({score}): {said}{where}"


class ReportConsistency:
    """What `rad3d report` needs from this module: its options, its settings from them, the check."""

    @staticmethod
    def add_arguments(parser) -> None:
        from engine.config import add_config_arguments

        add_config_arguments(parser, ConsistencyConfig, prefix="consistency_")

    @staticmethod
    def config(args) -> ConsistencyConfig:
        from engine.config import config_from_args

        return config_from_args(ConsistencyConfig, args, prefix="consistency_")

    @staticmethod
    def check(text: str, probabilities: Sequence[float], image, config: ConsistencyConfig) -> list[FindingCheck]:
        """`image`: the run's engine.image_model.ImageModel (label set, thresholds, validation AUROC)."""
        return check_case(text, probabilities, image.thresholds, FindingExtractor(image.label_set),
                          valid_auroc=image.valid_auroc, config=config)

    flag_line = staticmethod(flag_line)
    guarded_text = staticmethod(guarded_text)
    to_dict = staticmethod(check_to_dict)


def read_table(folder) -> tuple[pd.DataFrame, dict] | None:
    """(per-finding table, summary) of an evaluation folder's consistency.csv/.json; None when it has none."""
    import json
    from pathlib import Path

    import pandas as pd

    folder = Path(folder)
    if not (folder / "consistency.csv").is_file():
        return None
    summary = json.loads((folder / "consistency.json").read_text()) if (folder / "consistency.json").is_file() else {}
    return pd.read_csv(folder / "consistency.csv"), summary
