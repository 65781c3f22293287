"""The VLM3D challenge's report-generation evaluation as a second standard: its file, its labels,
its classification scores and its CRG score.

Facts read in forithmus/VLM3D-Dockers, `reportgen_evaluation/src/` (calc_scores.py, crg_score.py,
infer.py, evaluation.py) at commit c73fe07 and `ct_challenges/reportgen_evaluation/` (README.md,
test fixtures) at a947590, read 2026-11-29:

- File: a JSON list of `{"input_image_name", "report", "labels"}` (`labels`: 18 values 0/1 in the
  challenge's finding order, FINDINGS below). We read that list and also the challenge's own two
  shapes, whose entries carry no labels: its production submission
  `[{"outputs": [{"value": {"generated_reports": [...]}}]}]` and its ground truth
  `{"generated_reports": [...]}`.
- Labels: the container labels every report with a RadBERT classifier (sigmoid >= 0.5 per
  finding); its weights download at build time, so rad3d labels reports with its own
  FindingExtractor instead: positive -> 1; negative and not mentioned -> 0; `uncertain` -> 1 by
  default. That last is our judgement, not checked against the classifier's weights: it has no
  uncertain class, its present/absent training labels were given to whole CT-RATE reports, whose
  radiologists name suspected findings in hedged words, and a hedged finding is one the report
  raises; `--uncertain-as negative` gives the other reading. Labels a file carries are scored as
  given.
- Ground truth: binary labels per case (the challenge's ground_truth.csv:
  AccessionNo + the 18 columns; for CT-RATE these are the dataset's labels CSV).
- Matching: by case id, the volume extension (.nii.gz, .nii, .mha, ...) stripped on both sides
  (the README's contract). A ground-truth case without a prediction counts as all 0 (the
  container's `reindex(fill_value=0)`); predictions for other cases are ignored. Both are counted.
- Classification: per finding scikit-learn precision, recall, F1 (0 where undefined, as its
  default zero_division) and accuracy; macro = plain mean over the 18 findings.
- AUROC: the README lists a macro AUROC that calc_scores.py does not compute. Ours: scikit-learn's
  roc_auc_score of the binary labels per finding (equal to balanced accuracy), macro over the
  findings whose ground truth holds both classes (the others are undefined and listed).
- CRG (crg_score.py): TP, FN, FP summed over cases and findings; X = 18 · cases; A = ground-truth
  positives; r = (X − A) / (2A); U = (X − A) / 2; s = r·TP − r·FN − FP; CRG = U / (2U − s), 0 when
  2U − s = 0; undefined when A = 0 (the container raises; we report it undefined beside the other scores).
- Intervals (ours; the challenge reports none): every score above is a function of per-case
  TP/FP/FN/TN counts, so study.bootstrap resamples cases; a resample where a finding's AUROC is
  undefined leaves that finding out of that resample's macro.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import ConfigError, DatasetError
from engine.io import VOLUME_SUFFIXES

CONVENTION = ("VLM3D challenge, reportgen_evaluation @ forithmus/VLM3D-Dockers c73fe07 "
              "(calc_scores.py, crg_score.py; read 2026-11-29)")
# The challenge's finding order (its LABEL_COLS; CT-RATE's label columns).
FINDINGS = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema", "Atelectasis",
    "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
KEYS = ("input_image_name", "report", "labels")
# what a case file may be called: any volume rad3d reads, or the challenge's own .npz arrays
CASE_SUFFIXES = (*VOLUME_SUFFIXES, ".npz")
SUBMISSION_FILE = "vlm3d_submission.json"
GROUND_TRUTH_FILE = "vlm3d_ground_truth.json"
METRICS_FILE = "vlm3d_metrics.json"
EXTRACTOR_LABELS = "rad3d FindingExtractor (positive -> 1, uncertain -> {u}, negative / not mentioned -> 0)"


@dataclass(frozen=True)
class Entry:
    input_image_name: str
    report: str
    labels: tuple[int, ...] | None  # None: the file carried none (the challenge's own shapes)


def case_id(name: str) -> str:
    """The id a name is matched by: without folder and volume extension."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in CASE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# -- the file ----------------------------------------------------------------------------------
def write_vlm3d(entries: list[Entry], path: str | Path) -> Path:
    """The flat list, every entry with its 18 labels."""
    path = Path(path)
    rows = []
    for e in entries:
        if e.labels is None or len(e.labels) != len(FINDINGS):
            raise ConfigError(f"entry {e.input_image_name!r} needs {len(FINDINGS)} labels to be written", path)
        rows.append({"input_image_name": e.input_image_name, "report": e.report, "labels": [int(v) for v in e.labels]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_vlm3d(path: str | Path) -> list[Entry]:
    """Entries of a VLM3D file (flat list, or the challenge's wrapped submission or ground truth).
    One DatasetError naming the file and every bad entry."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DatasetError("VLM3D file not found", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"not a JSON file ({err})", path) from None
    items, need_labels = _items(doc, path)
    problems: list[str] = []
    entries: list[Entry] = []
    first_seen: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"entry {i}"
        if not isinstance(item, dict):
            problems.append(f"{where}: not an object but {type(item).__name__}")
            continue
        name = item.get("input_image_name")
        if isinstance(name, str) and name.strip():
            where = f"entry {i} ({name})"
        required = KEYS if need_labels else KEYS[:2]
        missing = [k for k in required if k not in item]
        if missing:
            problems.append(f"{where}: missing key(s) {', '.join(missing)}")
            continue
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: input_image_name must be a non-empty string, not {name!r}")
            continue
        if not isinstance(item["report"], str):
            problems.append(f"{where}: report must be a string, not {type(item['report']).__name__}")
            continue
        labels = _labels(item.get("labels"), where, problems) if "labels" in item else None
        key = case_id(name)
        if key in first_seen:
            problems.append(f"entries {first_seen[key]} and {i}: case {key!r} repeated")
            continue
        first_seen[key] = i
        entries.append(Entry(name.strip(), item["report"], labels))
    if not items:
        problems.append("no entries")
    if problems:
        raise DatasetError(f"malformed VLM3D file ({len(problems)} problems)", path, problems)
    return entries


def _items(doc, path: Path) -> tuple[list, bool]:
    """(entries, whether labels are required): the flat list requires them, the challenge's shapes do not."""
    if isinstance(doc, dict):
        if isinstance(doc.get("generated_reports"), list):
            return doc["generated_reports"], False
        raise DatasetError("not a VLM3D list: a JSON object without a 'generated_reports' list", path)
    if not isinstance(doc, list):
        raise DatasetError(f"not a VLM3D list: top level is {type(doc).__name__}", path)
    if doc and isinstance(doc[0], dict) and "outputs" in doc[0]:
        try:
            value = doc[0]["outputs"][0]["value"]
            items = value["generated_reports"] if isinstance(value, dict) else value
        except (KeyError, IndexError, TypeError):
            raise DatasetError("a wrapped VLM3D submission without outputs[0].value.generated_reports", path) from None
        if not isinstance(items, list):
            raise DatasetError("a wrapped VLM3D submission whose generated_reports is not a list", path)
        return items, False
    return doc, True


def _labels(value, where: str, problems: list[str]) -> tuple[int, ...] | None:
    if not isinstance(value, list):
        problems.append(f"{where}: labels must be a list of {len(FINDINGS)} values 0/1, not {type(value).__name__}")
        return None
    if len(value) != len(FINDINGS):
        problems.append(f"{where}: {len(value)} labels, expected {len(FINDINGS)}")
        return None
    # bool is an int in Python, but true/false in the file is not the challenge's format.
    bad = [(j, v) for j, v in enumerate(value)
           if isinstance(v, bool) or not isinstance(v, (int, float)) or v not in (0, 1)]
    if bad:
        j, v = bad[0]
        problems.append(f"{where}: labels[{j}] ({FINDINGS[j]}) is {json.dumps(v)}, expected 0 or 1")
        return None
    return tuple(int(v) for v in value)


# -- labels from text --------------------------------------------------------------------------
def extract_labels(reports: list[str], *, uncertain_as: str = "positive", extractor=None) -> np.ndarray:
    """(n, 18) 0/1 labels of report texts by rad3d's finding extractor (CT-RATE label set)."""
    from study.findings import FindingExtractor, FindingStatus

    if uncertain_as not in ("positive", "negative"):
        raise ConfigError(f"uncertain_as must be 'positive' or 'negative', not {uncertain_as!r}")
    if not reports:
        return np.zeros((0, len(FINDINGS)), dtype=np.int64)
    extractor = extractor or FindingExtractor()
    check_label_set(extractor.label_set)
    yes = {FindingStatus.POSITIVE} | ({FindingStatus.UNCERTAIN} if uncertain_as == "positive" else set())
    rows = [[int(status[f] in yes) for f in FINDINGS] for status in extractor.extract_many(reports)]
    return np.asarray(rows, dtype=np.int64).reshape(len(reports), len(FINDINGS))


def check_label_set(label_set) -> None:
    missing = [f for f in FINDINGS if f not in label_set.names]
    if missing:
        raise ConfigError(f"VLM3D scores CT-RATE's 18 findings; label set {label_set.name!r} lacks {missing}")


def in_challenge_order(labels, label_set) -> np.ndarray:
    """(n, 18) labels in the challenge's finding order from rows in `label_set`'s order."""
    check_label_set(label_set)
    return np.stack(labels)[:, [label_set.index(f) for f in FINDINGS]].astype(np.int64)


def entries_for(names: list[str], reports: list[str], labels: np.ndarray) -> list[Entry]:
    """Entries named by case id (the README's contract: no volume extension)."""
    return [Entry(case_id(n), r, tuple(int(v) for v in row)) for n, r, row in zip(names, reports, labels)]


# -- ground truth ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Labels:
    """Binary labels per case id, and where they came from (said beside every score)."""

    by_case: dict[str, np.ndarray]
    source: str
    how: str


def labels_of(entries: list[Entry], source: str, *, uncertain_as: str = "positive", extractor=None) -> Labels:
    """Labels of a file's entries: as given, or extracted from the report for entries without."""
    unlabelled = [e for e in entries if e.labels is None]
    extracted = extract_labels([e.report for e in unlabelled], uncertain_as=uncertain_as, extractor=extractor)
    by_case = _by_case([e for e in entries if e.labels is not None])
    by_case.update({case_id(e.input_image_name): row for e, row in zip(unlabelled, extracted)})
    rule = EXTRACTOR_LABELS.format(u=1 if uncertain_as == "positive" else 0)
    if not unlabelled:
        how = "labels from the file"
    elif len(unlabelled) == len(entries):
        how = f"labels extracted from the reports: {rule}"
    else:
        how = f"labels from the file; {len(unlabelled)} entries without extracted from the report: {rule}"
    return Labels(by_case, source, how)


def _by_case(entries: list[Entry]) -> dict[str, np.ndarray]:
    return {case_id(e.input_image_name): np.asarray(e.labels, dtype=np.int64) for e in entries}


def read_ground_truth(path: str | Path, *, uncertain_as: str = "positive", extractor=None,
                      split: str = "test") -> Labels:
    """Ground-truth labels from a VLM3D JSON, a labels CSV (AccessionNo or VolumeName + the 18
    finding columns: the challenge's ground_truth.csv or CT-RATE's labels CSV) or a dataset folder
    (its labels CSV, the cases of `split` only: every ground-truth case without a prediction counts
    as a miss, so the other splits must not be in it)."""
    path = Path(path)
    if path.is_dir():
        from engine.data import resolve

        dataset = resolve(path, section=None)  # only labels are read
        cases = dataset.split(split)
        if not cases:
            raise DatasetError(f"the dataset has no {split!r} cases to take ground truth from", path)
        if any(c.labels is None for c in cases):
            raise DatasetError("the dataset has no labels CSV to take ground truth from", path)
        rows = in_challenge_order([c.labels for c in cases], dataset.label_set)
        labels_csv = dataset.csv_paths.get("labels")
        shown = ", ".join(map(str, labels_csv)) if isinstance(labels_csv, (list, tuple)) else str(labels_csv or path)
        return Labels({case_id(c.volume_name): row for c, row in zip(cases, rows)}, shown,
                      f"labels from the dataset's labels CSV, {split} split")
    if path.suffix.lower() == ".csv":
        return _labels_csv(path)
    entries = read_vlm3d(path)
    return labels_of(entries, str(path), uncertain_as=uncertain_as, extractor=extractor)


def _labels_csv(path: Path) -> Labels:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError("ground-truth file not found", path) from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"cannot read labels CSV ({str(err).splitlines()[0]})", path) from None
    key = next((k for k in ("AccessionNo", "VolumeName") if k in df.columns), None)
    missing = [f for f in FINDINGS if f not in df.columns]
    if key is None or missing:
        lacks = ([] if key else ["AccessionNo or VolumeName"]) + missing
        raise DatasetError(f"labels CSV lacks column(s) {', '.join(lacks)}", path)
    problems, by_case = [], {}
    for i, name in enumerate(df[key].str.strip()):
        line = i + 2  # line 1 is the header
        values = pd.to_numeric(df.loc[i, list(FINDINGS)], errors="coerce").to_numpy(dtype=np.float64)
        bad = [f for f, v in zip(FINDINGS, values) if v not in (0.0, 1.0)]
        cid = case_id(name)
        if bad:
            problems.append(f"line {line} ({name}): {bad[0]} is {df.at[i, bad[0]]!r}, expected 0 or 1")
        elif not cid:
            problems.append(f"line {line}: empty {key}")
        elif cid in by_case:
            problems.append(f"line {line}: case {cid!r} repeated")
        else:
            by_case[cid] = values.astype(np.int64)
    if not by_case and not problems:
        problems.append("no rows")
    if problems:
        raise DatasetError(f"malformed labels CSV ({len(problems)} problems)", path, problems)
    return Labels(by_case, str(path), f"labels from {path.name}")


# -- scores ------------------------------------------------------------------------------------
def crg(tp, fn, fp, x):
    """crg_score.py's CRG from summed TP, FN, FP and X = findings × cases (scalars or arrays);
    nan where A = TP + FN is 0 (the container raises there)."""
    tp, fn, fp, x = (np.asarray(v, dtype=np.float64) for v in (tp, fn, fp, x))
    a = tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x - a) / (2 * a)
        u = (x - a) / 2
        s = r * tp - r * fn - fp
        out = np.where(2 * u - s != 0, u / (2 * u - s), 0.0)
    return np.where(a > 0, out, np.nan)


def _ratio(num, den):
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0, the challenge's default)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def _balanced(tp, fp, fn, tn):
    """AUROC of binary labels = (TPR + TNR) / 2; nan where the truth holds one class."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((tp + fn > 0) & (tn + fp > 0), 0.5 * (tp / (tp + fn) + tn / (tn + fp)), np.nan)


def _statistics(auroc_defined: np.ndarray):
    """study.bootstrap statistics over per-case columns tp_j, fp_j, fn_j, tn_j (j = finding)."""
    from study.bootstrap import Statistic

    k = len(FINDINGS)
    columns = tuple(f"{c}{j}" for c in ("tp", "fp", "fn", "tn") for j in range(k))

    def split(s):
        s = s.reshape(len(s), 4, k)
        return s[:, 0], s[:, 1], s[:, 2], s[:, 3]

    def precision(s):
        tp, fp, _, _ = split(s)
        return _ratio(tp, tp + fp).mean(axis=1)

    def recall(s):
        tp, _, fn, _ = split(s)
        return _ratio(tp, tp + fn).mean(axis=1)

    def f1(s):
        tp, fp, fn, _ = split(s)
        return _ratio(2 * tp, 2 * tp + fp + fn).mean(axis=1)

    def accuracy(s):
        tp, fp, fn, tn = split(s)
        return _ratio(tp + tn, tp + fp + fn + tn).mean(axis=1)

    def auroc(s):
        values = _balanced(*split(s))[:, auroc_defined]
        ok = np.isfinite(values)
        return np.where(ok.any(axis=1), np.where(ok, values, 0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1), np.nan)

    def crg_score(s):
        tp, fp, fn, tn = split(s)
        n = (tp + fp + fn + tn)[:, 0]
        return crg(tp.sum(1), fn.sum(1), fp.sum(1), k * n)

    impl = "VLM3D (see the card)"
    return [Statistic(key, label, "vlm3d", impl, columns, fn) for key, label, fn in (
        ("precision", "Macro precision", precision), ("recall", "Macro recall", recall), ("f1", "Macro F1", f1),
        ("accuracy", "Macro accuracy", accuracy), ("auroc", "Macro AUROC (binary labels)", auroc),
        ("crg", "CRG", crg_score))]


def score(predicted: Labels, truth: Labels, *, resamples: int = 5000, seed: int = 0, progress: bool = False) -> dict:
    """The challenge's scores of `predicted` against `truth` on the ground-truth cases, with 95%
    bootstrap intervals; a JSON-ready document in the container's layout (classification, crg)
    plus what it was computed from."""
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    from study.bootstrap import LEVEL, bootstrap

    cases = list(truth.by_case)
    if not cases:
        raise DatasetError("the ground truth holds no cases", truth.source)
    missing = [c for c in cases if c not in predicted.by_case]
    extra = [c for c in predicted.by_case if c not in truth.by_case]
    gt = np.stack([truth.by_case[c] for c in cases])
    pred = np.stack([predicted.by_case.get(c, np.zeros(len(FINDINGS), dtype=np.int64)) for c in cases])
    positives = int(gt.sum())

    per_pathology, undefined_auroc = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for j, name in enumerate(FINDINGS):
            y, p = gt[:, j], pred[:, j]
            both = 0 < y.sum() < len(y)
            if not both:
                undefined_auroc.append(name)
            per_pathology.append({
                "name": name,
                "precision": float(precision_score(y, p, zero_division=0)),
                "recall": float(recall_score(y, p, zero_division=0)),
                "f1": float(f1_score(y, p, zero_division=0)),
                "accuracy": float(accuracy_score(y, p)),
                "auroc": float(roc_auc_score(y, p)) if both else None,
                "positives": int(y.sum()),
                "predicted": int(p.sum()),
            })
    aurocs = [m["auroc"] for m in per_pathology if m["auroc"] is not None]
    macro = {key: float(np.mean([m[key] for m in per_pathology])) for key in ("precision", "recall", "f1", "accuracy")}
    macro["auroc"] = float(np.mean(aurocs)) if aurocs else None

    tp = int(((pred == 1) & (gt == 1)).sum())
    fn = int(((pred == 0) & (gt == 1)).sum())
    fp = int(((pred == 1) & (gt == 0)).sum())
    x = len(FINDINGS) * len(cases)
    u = (x - positives) / 2
    crg_doc = {"TP": tp, "FN": fn, "FP": fp, "X": x, "A": positives, "r": None, "U": u, "score_s": None, "CRG": None}
    if positives:  # else undefined: the container raises; we say so in the table and keep the other scores
        r = (x - positives) / (2 * positives)
        crg_doc.update(r=r, score_s=r * tp - r * fn - fp, CRG=float(crg(tp, fn, fp, x)))

    table = case_counts(gt, pred)
    defined = np.array([m["auroc"] is not None for m in per_pathology])
    estimates = bootstrap(table, _statistics(defined), resamples=resamples, seed=seed, progress=progress)
    return {
        "convention": CONVENTION,
        "n_cases": len(cases),
        "missing_predictions": {"count": len(missing), "cases": missing[:20], "scored_as": "all 18 labels 0"},
        "ignored_predictions": {"count": len(extra), "cases": extra[:20]},
        "prediction_labels": {"source": predicted.source, "how": predicted.how},
        "ground_truth_labels": {"source": truth.source, "how": truth.how},
        "classification": {"per_pathology": per_pathology, "macro": macro,
                           "auroc_undefined": undefined_auroc},
        "crg": crg_doc,
        "intervals": {k: [_finite(e.ci_low), _finite(e.ci_high)] for k, e in estimates.items()},
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL, "unit": "case"},
    }


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None  # JSON has no NaN


def case_counts(gt: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Per case and finding: was it a TP, FP, FN or TN (the bootstrap's per-case table)."""
    cols = {}
    for name, hit in (("tp", (pred == 1) & (gt == 1)), ("fp", (pred == 1) & (gt == 0)),
                      ("fn", (pred == 0) & (gt == 1)), ("tn", (pred == 0) & (gt == 0))):
        for j in range(gt.shape[1]):
            cols[f"{name}{j}"] = hit[:, j].astype(np.float64)
    return pd.DataFrame(cols)


def format_document(doc: dict) -> str:
    """The scores as a Markdown table with the metric card under it."""
    macro, ci, crg_doc = doc["classification"]["macro"], doc["intervals"], doc["crg"]
    rows = ["| metric | value | 95% CI |", "|---|---|---|"]

    def row(label, value, key):
        if value is None:
            rows.append(f"| {label} | undefined | |")
        else:
            lo, hi = ci[key]
            interval = "" if lo is None else f"[{lo:.4f}, {hi:.4f}]"
            rows.append(f"| {label} | {value:.4f} | {interval} |")

    row("CRG", crg_doc["CRG"], "crg")
    for key, label in (("f1", "Macro F1"), ("precision", "Macro precision"), ("recall", "Macro recall"),
                       ("accuracy", "Macro accuracy"), ("auroc", "Macro AUROC (binary labels)")):
        row(label, macro[key], key)
    rows += ["", "| finding | P | R | F1 | acc | AUROC | GT+ | pred+ |", "|---|---|---|---|---|---|---|---|"]
    for m in doc["classification"]["per_pathology"]:
        auroc = "–" if m["auroc"] is None else f"{m['auroc']:.3f}"
        rows.append(f"| {m['name']} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                    f"{m['accuracy']:.3f} | {auroc} | {m['positives']} | {m['predicted']} |")
    b = doc["bootstrap"]
    undefined = doc["classification"]["auroc_undefined"]
    card = [
        "",
        f"Metric card: {doc['convention']}.",
        f"- cases: {doc['n_cases']} ground-truth cases; {doc['missing_predictions']['count']} without a prediction "
        f"(scored as all 0, as the container does); {doc['ignored_predictions']['count']} predictions for "
        "other cases ignored",
        f"- predicted labels: {doc['prediction_labels']['how']} ({doc['prediction_labels']['source']})",
        f"- ground truth: {doc['ground_truth_labels']['how']} ({doc['ground_truth_labels']['source']})",
        "- macro = mean over the 18 findings; precision/recall/F1 0 where undefined (scikit-learn zero_division=0)",
        "- AUROC of binary labels (= balanced accuracy), macro over findings with both classes in the ground truth"
        + (f"; undefined for {len(undefined)}: {', '.join(undefined)}" if undefined else ""),
        f"- CRG = U / (2U − s): TP {crg_doc['TP']}, FN {crg_doc['FN']}, FP {crg_doc['FP']}, X {crg_doc['X']}, "
        f"A {crg_doc['A']}, U {crg_doc['U']:.4g}, "
        + (f"r {crg_doc['r']:.4g}, s {crg_doc['score_s']:.4g}" if crg_doc["A"] else
           "undefined: the ground truth holds no positive label"),
        f"- intervals: {b['level']:.0%} percentile bootstrap over cases, {b['resamples']} resamples, seed {b['seed']} "
        "(rad3d's; the challenge reports none)",
    ]
    return "\n".join(rows + card)


def write_run_files(volume_names: list[str], generated: list[str], references: list[str],
                    reference_labels: np.ndarray | None, out: str | Path, *, resamples: int, seed: int,
                    label_source: str = "the dataset's labels CSV", progress: bool = False) -> dict:
    """`rad3d evaluate --format vlm3d`: the submission (generated reports, extractor labels), the
    matching ground truth (reference reports; the dataset's labels when given, else the
    extractor's on the reference) and their scores, under `out`. Returns the score document."""
    out = Path(out)
    rule = EXTRACTOR_LABELS.format(u=1)
    submission = entries_for(volume_names, generated, extract_labels(generated))
    truth_how = f"labels from {label_source}"
    if reference_labels is None:
        reference_labels = extract_labels(references)
        truth_how = f"labels extracted from the reference reports: {rule}"
    truth = entries_for(volume_names, references, np.asarray(reference_labels))
    sub_path = write_vlm3d(submission, out / SUBMISSION_FILE)
    gt_path = write_vlm3d(truth, out / GROUND_TRUTH_FILE)
    predicted = Labels(_by_case(submission), str(sub_path), f"labels extracted from the generated reports: {rule}")
    doc = score(predicted, Labels(_by_case(truth), str(gt_path), truth_how), resamples=resamples, seed=seed,
                progress=progress)
    doc["files"] = {"submission": str(sub_path), "ground_truth": str(gt_path)}
    (out / METRICS_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    return doc
