"""Visual question answering metrics as M3D's `Bench/eval/eval_vqa.py` computes them, with case-bootstrap intervals.

Closed items (four choices):
- accuracy, M3D's rule: right when the string "{AnswerChoice}." (e.g. "B.") occurs anywhere in the
  generated text. "B. Left" and "The answer is B." count; so does "A. Right or B. Left".
- exact choice (rad3d's stricter variant): the text, after optional spaces and "(", starts with the
  right letter followed by ".", ")", ":" or the end of the text; no other letter's "X." occurs anywhere;
  and whatever follows the letter is empty or starts with the right choice's text (case and spacing
  ignored). "B", "B. Left", "(B) left lung" count; "The answer is B." and "B. Right" do not.
Open items, per sample then averaged (M3D writes the per-sample scores; the mean is ours):
- BLEU-1: HF `evaluate`'s bleu with max_order=1 (tensorflow/nmt's compute_bleu on the 13a tokenizer:
  case-sensitive, punctuation split off; clipped unigram precision × brevity penalty, no smoothing;
  0 when either text has no token), re-implemented here (evaluate is not a dependency).
- ROUGE-1: the F-measure of rouge-score's rouge1 without stemming, which `evaluate`'s rouge returns
  for a single pair (its bootstrap aggregate of one score is that score).
- METEOR: the project's METEOR 1.5 jar (pycocoevalcap's, `-l en -norm`; study/metrics/meteor.py), per
  sample. M3D calls `evaluate`'s meteor, which is NLTK's meteor_score (alpha 0.9, beta 3, gamma 0.5;
  exact, Porter-stem and WordNet-synonym matches); the jar adds paraphrase matching and
  function-word weights with other parameters, so the two differ and are not comparable.
- BERTScore F1: study/metrics/bertscore.py with all-MiniLM-L6-v2 layer 6, no idf, no rescaling.
  M3D's `lang="en"` means `evaluate`'s default English model (roberta-large, layer 17): not comparable.
Intervals: 95% percentile intervals from `study.bootstrap.resampled`, resampling volumes (a volume's
items go together, as the project resamples cases), the point value being the plain mean over items.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.vqa import CHOICE_COLUMNS, LETTERS, VQA_COLUMNS, VqaItem, item_row
from study.bootstrap import DEFAULT_RESAMPLES, percentile_interval, resampled

CLOSED_METRICS = ("accuracy", "exact_choice")
OPEN_METRICS = ("bleu_1", "rouge_1", "meteor", "bertscore_f1")
LABELS = {"accuracy": "Accuracy", "exact_choice": "Exact choice", "bleu_1": "BLEU-1", "rouge_1": "ROUGE-1 F",
          "meteor": "METEOR", "bertscore_f1": "BERTScore F1"}
CONVENTIONS = {
    "accuracy": "M3D eval_vqa: '{AnswerChoice}.' anywhere in the output",
    "exact_choice": "rad3d exact choice: leading letter right, no other choice named",
    "bleu_1": "M3D eval_vqa: evaluate bleu max_order=1 (13a tokens, brevity penalty, no smoothing), per sample",
    "rouge_1": "M3D eval_vqa: evaluate rouge1 F (rouge-score, no stemmer), per sample",
    "meteor": "METEOR 1.5 jar (pycocoevalcap -l en -norm), per sample; not evaluate's NLTK meteor",
    "bertscore_f1": "BERTScore F1, all-MiniLM-L6-v2 layer 6, no idf/rescaling; not evaluate's roberta-large",
}
SHORT = {"accuracy": "M3D eval_vqa", "exact_choice": "rad3d", "bleu_1": "M3D eval_vqa", "rouge_1": "M3D eval_vqa",
         "meteor": "1.5 jar", "bertscore_f1": "MiniLM-L6"}
RESAMPLES = DEFAULT_RESAMPLES  # the project's 5000

# -- closed ------------------------------------------------------------------------------------------------

_LEADING = re.compile(r"^\s*\(?([A-D])(?:[.):]|$)")


def closed_correct(prediction: str, letter: str) -> float:
    """M3D's rule: 1.0 when "{letter}." occurs anywhere in the prediction."""
    return float(f"{letter}." in prediction)


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .,;:")


def exact_choice(prediction: str, letter: str, choices: tuple[str, ...]) -> float:
    """1.0 when the prediction picks `letter` and nothing else (module docstring), else 0.0."""
    m = _LEADING.match(prediction)
    if not m or m.group(1) != letter:
        return 0.0
    if any(f"{x}." in prediction for x in LETTERS if x != letter):
        return 0.0
    rest = _norm(prediction[m.end():])
    return float(not rest or rest.startswith(_norm(choices[LETTERS.index(letter)])))


# -- open --------------------------------------------------------------------------------------------------

# sacrebleu's 13a rules as `evaluate`'s bleu applies them (tokenizer_13a.py).
_13A = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols and punctuation
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)


def tokenize_13a(text: str) -> list[str]:
    line = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _13A:
        line = pattern.sub(repl, line)
    return line.split()


def bleu_1(prediction: str, reference: str) -> float:
    """`evaluate.load("bleu").compute(predictions=[prediction], references=[reference], max_order=1)["bleu"]`."""
    hyp, ref = tokenize_13a(prediction), tokenize_13a(reference)
    if not hyp or not ref:
        return 0.0
    matches = sum((Counter(hyp) & Counter(ref)).values())
    ratio = len(hyp) / len(ref)
    penalty = 1.0 if ratio > 1.0 else float(np.exp(1 - 1 / ratio))
    return matches / len(hyp) * penalty


def rouge_1(predictions: list[str], references: list[str]) -> np.ndarray:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1"], use_stemmer=False)
    return np.array([scorer.score(r, p)["rouge1"].fmeasure for p, r in zip(predictions, references)])


def meteor_per_sample(predictions: list[str], references: list[str]) -> np.ndarray:
    from study.metrics.meteor import MeteorJar

    with MeteorJar() as jar:
        return jar.scores(jar.case_stats(predictions, references))


def open_scores(predictions: list[str], references: list[str], *, meteor: bool = True,
                bertscore: bool = True, encoder=None) -> dict[str, np.ndarray]:
    """Per-sample open metrics (a metric switched off, or without data, is left out)."""
    out = {"bleu_1": np.array([bleu_1(p, r) for p, r in zip(predictions, references)], dtype=np.float64),
           "rouge_1": rouge_1(predictions, references)}
    if meteor and predictions:
        out["meteor"] = meteor_per_sample(predictions, references)
    if bertscore and predictions:
        from study.metrics.bertscore import bertscore_f1, default_encoder

        encoder = encoder or default_encoder()
        if encoder is not None:
            out["bertscore_f1"] = bertscore_f1(predictions, references, encoder)
    return out


# -- a predictions table -----------------------------------------------------------------------------------

def predictions_frame(items: list[VqaItem], predictions: list[str]) -> pd.DataFrame:
    """vqa.csv's columns for each item plus its `Prediction` (the decoder's text)."""
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
    return pd.DataFrame([{**item_row(i), "Prediction": p} for i, p in zip(items, predictions)])


def score_items(frame: pd.DataFrame, *, meteor: bool = True, bertscore: bool = True, encoder=None) -> pd.DataFrame:
    """One row per item: the predictions table plus a column per metric (NaN where the form has no such metric)."""
    missing = [c for c in (*VQA_COLUMNS, "Prediction") if c not in frame.columns]
    if missing:
        raise ValueError(f"the predictions table lacks columns {missing}")
    out = frame.reset_index(drop=True).copy()
    out["Prediction"] = out["Prediction"].fillna("").astype(str)
    for metric in (*CLOSED_METRICS, *OPEN_METRICS):
        out[metric] = np.nan
    closed = out.index[out["Form"] == "closed"]
    for i in closed:
        row = out.loc[i]
        out.loc[i, "accuracy"] = closed_correct(row["Prediction"], row["AnswerChoice"])
        out.loc[i, "exact_choice"] = exact_choice(row["Prediction"], row["AnswerChoice"],
                                                  tuple(row[c] for c in CHOICE_COLUMNS))
    opened = out.index[out["Form"] == "open"]
    scores = open_scores(list(out.loc[opened, "Prediction"]), list(out.loc[opened, "Answer"].astype(str)),
                         meteor=meteor, bertscore=bertscore, encoder=encoder)
    for metric, values in scores.items():
        out.loc[opened, metric] = values
    return out


def _groups(per_item: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(form, question type or "all", row mask) for every group that has items."""
    out = []
    for form in ("closed", "open"):
        in_form = (per_item["Form"] == form).to_numpy()
        if not in_form.any():
            continue
        for qtype in sorted(per_item.loc[in_form, "QuestionType"].unique()):
            out.append((form, qtype, in_form & (per_item["QuestionType"] == qtype).to_numpy()))
        out.append((form, "all", in_form))
    return out


def summarise(per_item: pd.DataFrame, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Tidy table: form, question_type, metric, n_items, n_volumes, value (mean over items), ci_low,
    ci_high (95%, volumes resampled by study.bootstrap.resampled), convention."""
    volumes, volume_of = np.unique(per_item["VolumeName"].to_numpy(), return_inverse=True)
    keys, num, den = [], [], []
    for form, qtype, mask in _groups(per_item):
        for metric in CLOSED_METRICS if form == "closed" else OPEN_METRICS:
            values = per_item[metric].to_numpy(dtype=np.float64)
            counted = mask & np.isfinite(values)
            if counted.any():
                keys.append((form, qtype, metric, int(counted.sum()), len(set(volume_of[counted]))))
                num.append(np.where(counted, values, 0.0))
                den.append(counted.astype(np.float64))
    if not keys:
        return pd.DataFrame(columns=["form", "question_type", "metric", "n_items", "n_volumes", "value", "ci_low",
                                     "ci_high", "convention"])
    # Per-volume sums: a resample of volumes is then one matrix product.
    by_volume_num = np.zeros((len(volumes), len(keys)))
    by_volume_den = np.zeros((len(volumes), len(keys)))
    np.add.at(by_volume_num, volume_of, np.column_stack(num))
    np.add.at(by_volume_den, volume_of, np.column_stack(den))

    def means(w: np.ndarray) -> np.ndarray:
        d = w @ by_volume_den
        return np.divide(w @ by_volume_num, d, out=np.full(d.shape, np.nan), where=d > 0)

    point = by_volume_num.sum(axis=0) / by_volume_den.sum(axis=0)
    samples = resampled(means, len(volumes), resamples, seed)
    rows = []
    for j, (form, qtype, metric, n_items, n_volumes) in enumerate(keys):
        low, high = percentile_interval(samples[:, j])
        rows.append({"form": form, "question_type": qtype, "metric": metric, "n_items": n_items,
                     "n_volumes": n_volumes, "value": float(point[j]), "ci_low": low, "ci_high": high,
                     "convention": CONVENTIONS[metric]})
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """One markdown table per form (rows: question types, then all; cells: mean [95% CI]), the
    convention of each column named in its header and in full below."""
    parts = []
    for form, metrics in (("closed", CLOSED_METRICS), ("open", OPEN_METRICS)):
        sub = table[table["form"] == form]
        metrics = [m for m in metrics if m in set(sub["metric"])]
        if sub.empty or not metrics:
            continue
        header = [f"{form} question type", "items", *(f"{LABELS[m]} ({SHORT[m]})" for m in metrics)]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        order = [t for t in dict.fromkeys(sub["question_type"]) if t != "all"] + ["all"]
        for qtype in order:
            rows = sub[sub["question_type"] == qtype].set_index("metric")
            cells = [f"{rows.loc[m, 'value']:.3f} [{rows.loc[m, 'ci_low']:.3f}, {rows.loc[m, 'ci_high']:.3f}]"
                     if m in rows.index else "" for m in metrics]
            name = f"**{qtype}**" if qtype == "all" else qtype
            lines.append("| " + " | ".join([name, str(int(rows["n_items"].max())), *cells]) + " |")
        parts.append("\n".join(lines))
        parts.append("\n".join(f"- {LABELS[m]}: {CONVENTIONS[m]}" for m in metrics))
    return "\n\n".join(parts) + "\n\nMeans over items with 95% bootstrap intervals (volumes resampled).\n"


@dataclass
class VqaEvaluation:
    per_item: pd.DataFrame  # the predictions table with one column per metric
    table: pd.DataFrame  # tidy: form, question_type, metric, n_items, n_volumes, value, ci_low, ci_high, convention
    markdown: str


def evaluate_vqa(predictions: pd.DataFrame, *, meteor: bool = True, bertscore: bool = True, encoder=None,
                 resamples: int = RESAMPLES, seed: int = 0) -> VqaEvaluation:
    """Score a predictions table (vqa.csv's columns plus `Prediction`; `predictions_frame` makes one) per item,
    then means with intervals per form and question type."""
    per_item = score_items(predictions, meteor=meteor, bertscore=bertscore, encoder=encoder)
    table = summarise(per_item, resamples, seed)
    return VqaEvaluation(per_item, table, markdown_table(table))
