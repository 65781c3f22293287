"""Reader-study statistics from a ratings table (one row per reader × item: reader, case, arm,
clinical, technical): per-arm means with 95% bootstrap intervals per reader and averaged over
readers, percentage change against a reference arm, paired Wilcoxon tests between arms, and
inter-reader agreement (quadratic-weighted Cohen's kappa for each pair of readers, ICC(2,1) and
Krippendorff's ordinal alpha, with a case-bootstrap interval, for any number).

The bootstrap resamples cases (the unit the study sampled), keeping each case's readers and
arms together; it is study.bootstrap's (the same seeded case counts as every other interval).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

SCORE_COLUMNS = ("clinical", "technical")
AVERAGE = "(average)"


def weighted_kappa(a, b) -> float:
    """Quadratic-weighted Cohen's kappa of two readers' 1–5 scores of the same items."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    # Every point of the scale is a label, observed or not, so distances are those of the scale.
    labels = np.arange(min(1, a.min(), b.min()), max(5, a.max(), b.max()) + 1)
    with warnings.catch_warnings():  # one shared category: undefined, reported as NaN
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b, weights="quadratic", labels=labels))


def icc_2_1(x) -> float:
    """ICC(2,1) of Shrout & Fleiss (1979): two-way random effects, absolute agreement, single
    rater, from an (n targets × k raters) table without gaps:
        (BMS − EMS) / (BMS + (k − 1)·EMS + k·(JMS − EMS)/n)."""
    x = np.asarray(x, dtype=np.float64)
    n, k = x.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = x.mean()
    bms = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)  # between targets
    jms = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)  # between judges
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    ems = (resid**2).sum() / ((n - 1) * (k - 1))
    denom = bms + (k - 1) * ems + k * (jms - ems) / n
    return float((bms - ems) / denom) if denom else float("nan")


SCALE = np.arange(1, 6)  # the rubric's 1–5 grades: alpha's value domain
ALPHA = "Krippendorff's alpha (ordinal)"


def _value_counts(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(items × grades) how many readers gave each grade to each item (missing ratings left out), and
    the grades: the 1–5 scale, widened to any grade outside it."""
    values = table.to_numpy(dtype=float)
    seen = values[np.isfinite(values)]
    domain = np.arange(min(1, seen.min(initial=1)), max(5, seen.max(initial=5)) + 1)
    return np.stack([(values == g).sum(axis=1) for g in domain], axis=1), domain


def krippendorff_alpha(value_counts: np.ndarray, domain: np.ndarray = SCALE) -> float:
    """Krippendorff's alpha at the ordinal level from the `krippendorff` package (Krippendorff 2011,
    "Computing Krippendorff's Alpha-Reliability"), from (items × grades) counts over `domain`; items
    rated by fewer than two readers carry no pair and drop out; NaN when no grade varies."""
    import krippendorff

    pairable = value_counts[value_counts.sum(axis=1) >= 2]
    if len(pairable) == 0 or (pairable.sum(axis=0) > 0).sum() < 2:
        return float("nan")
    return float(krippendorff.alpha(value_counts=pairable, value_domain=domain, level_of_measurement="ordinal"))


def alpha_interval(value_counts: np.ndarray, domain: np.ndarray, cases: np.ndarray, resamples: int,
                   seed: int) -> tuple[float, float]:
    """95% percentile interval of alpha over resampled cases: a case drawn k times brings all its
    items (its arms) k times, as the means' bootstrap does."""
    from study.bootstrap import percentile_interval, resampled

    codes, index = np.unique(cases, return_inverse=True)
    if len(codes) < 2 or np.isnan(krippendorff_alpha(value_counts, domain)):
        return float("nan"), float("nan")

    def alphas(w: np.ndarray) -> np.ndarray:
        return np.array([[krippendorff_alpha(np.repeat(value_counts, row[index].astype(np.int64), axis=0), domain)]
                         for row in w])

    return percentile_interval(resampled(alphas, len(codes), resamples, seed)[:, 0])


def _bootstrap_mean(per_case: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    from study.bootstrap import percentile_interval, resampled

    if len(per_case) < 2:
        return float("nan"), float("nan")
    means = resampled(lambda w: (w @ per_case)[:, None] / len(per_case), len(per_case), resamples, seed)
    return percentile_interval(means[:, 0])


def arm_means(ratings: pd.DataFrame, *, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Rows per (score, arm, reader) with n, mean and 95% bootstrap interval; reader AVERAGE is
    the mean over readers of each case's scores, bootstrapped over cases."""
    rows = []
    readers = sorted(ratings["reader"].unique())
    for score in SCORE_COLUMNS:
        for arm in sorted(ratings["arm"].unique()):
            sub = ratings[ratings["arm"] == arm]
            for reader in readers + [AVERAGE]:
                if reader == AVERAGE:
                    per_case = sub.groupby("case")[score].mean().to_numpy(dtype=float)
                else:
                    per_case = sub.loc[sub["reader"] == reader, score].to_numpy(dtype=float)
                if len(per_case) == 0:
                    continue
                lo, hi = _bootstrap_mean(per_case, resamples, seed)
                rows.append({"score": score, "arm": arm, "reader": reader, "n": len(per_case),
                             "mean": float(per_case.mean()), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["score", "arm", "reader", "n", "mean", "ci_low", "ci_high"])


def improvements(means: pd.DataFrame, reference_arm: str) -> pd.DataFrame:
    """% change of each arm's reader-averaged mean over the reference arm's: 100·(m − m_ref)/m_ref."""
    avg = means[means["reader"] == AVERAGE]
    rows = []
    for score in SCORE_COLUMNS:
        s = avg[avg["score"] == score].set_index("arm")["mean"]
        if reference_arm not in s.index:
            continue
        for arm, m in s.items():
            if arm != reference_arm:
                rows.append({"score": score, "arm": arm, "reference": reference_arm,
                             "percent": 100.0 * (m - s[reference_arm]) / s[reference_arm]})
    return pd.DataFrame(rows, columns=["score", "arm", "reference", "percent"])


def paired_wilcoxon(ratings: pd.DataFrame) -> pd.DataFrame:
    """Wilcoxon signed-rank test between every pair of arms on the cases both have, each case's
    score averaged over readers (scipy, two-sided; 'zsplit' keeps zero differences in the ranks)."""
    from scipy.stats import wilcoxon

    rows = []
    for score in SCORE_COLUMNS:
        table = ratings.pivot_table(index="case", columns="arm", values=score, aggfunc="mean")
        for a, b in combinations(sorted(table.columns), 2):
            pair = table[[a, b]].dropna()
            diff = pair[b] - pair[a]
            p = stat = float("nan")
            if len(pair) >= 2 and (diff != 0).any():
                res = wilcoxon(pair[a], pair[b], zero_method="zsplit")
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append({"score": score, "arm_a": a, "arm_b": b, "n": len(pair),
                         "mean_difference": float(diff.mean()) if len(pair) else float("nan"),
                         "statistic": stat, "p_value": p})
    return pd.DataFrame(rows, columns=["score", "arm_a", "arm_b", "n", "mean_difference", "statistic", "p_value"])


def agreement(ratings: pd.DataFrame, *, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per score: ICC(2,1) over the items every reader rated, Krippendorff's ordinal alpha over
    every item two or more readers rated (with a 95% case-bootstrap interval) and, for each pair
    of readers, quadratic-weighted kappa on the items both rated."""
    rows = []
    readers = sorted(ratings["reader"].unique())
    case_of = ratings.groupby("item_code")["case"].first()
    for score in SCORE_COLUMNS:
        table = ratings.pivot_table(index="item_code", columns="reader", values=score, aggfunc="first")
        if len(readers) >= 2:
            full = table[readers].dropna()
            rows.append({"score": score, "measure": "ICC(2,1)", "readers": ", ".join(readers), "n_items": len(full),
                         "value": icc_2_1(full.to_numpy()) if len(full) >= 2 else float("nan")})
            counts, domain = _value_counts(table[readers])
            paired = counts.sum(axis=1) >= 2
            cases = case_of.loc[table.index[paired]].to_numpy()
            lo, hi = alpha_interval(counts[paired], domain, cases, resamples, seed)
            rows.append({"score": score, "measure": ALPHA, "readers": ", ".join(readers), "n_items": int(paired.sum()),
                         "value": krippendorff_alpha(counts, domain), "ci_low": lo, "ci_high": hi})
        for a, b in combinations(readers, 2):
            pair = table[[a, b]].dropna()
            rows.append({"score": score, "measure": "weighted kappa (quadratic)", "readers": f"{a}, {b}",
                         "n_items": len(pair), "value": weighted_kappa(pair[a], pair[b]) if len(pair) else float("nan")})
    return pd.DataFrame(rows, columns=["score", "measure", "readers", "n_items", "value", "ci_low", "ci_high"])


def key_agreement(ratings: pd.DataFrame, key: pd.DataFrame | None) -> pd.DataFrame:
    """Per score and reader, against the answer key on the keyed items the reader rated: the fraction
    of exact agreement and quadratic-weighted kappa."""
    columns = ["score", "reader", "n_items", "exact_agreement", "weighted_kappa"]
    if key is None or key.empty or ratings.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for score in SCORE_COLUMNS:
        merged = ratings[["reader", "item_code", score]].merge(key[["item_code", score]], on="item_code",
                                                               suffixes=("", "_key"))
        for reader, sub in merged.groupby("reader", sort=True):
            a, b = sub[score].to_numpy(), sub[f"{score}_key"].to_numpy()
            rows.append({"score": score, "reader": reader, "n_items": len(sub),
                         "exact_agreement": float((a == b).mean()), "weighted_kappa": weighted_kappa(a, b)})
    return pd.DataFrame(rows, columns=columns)


@dataclass
class StudySummary:
    means: pd.DataFrame
    improvements: pd.DataFrame
    wilcoxon: pd.DataFrame
    agreement: pd.DataFrame
    key_agreement: pd.DataFrame | None = None  # each reader against the answer key, when one is loaded


def summarize(ratings: pd.DataFrame, reference_arm: str | None = None, *, resamples: int = 2000, seed: int = 0,
              key: pd.DataFrame | None = None) -> StudySummary:
    """All of the above (and agreement with the answer `key`, when given); reference_arm defaults to
    the first arm in alphabetical order."""
    if ratings.empty:
        empty = pd.DataFrame()
        return StudySummary(arm_means(ratings) if "arm" in ratings else empty, empty, empty, empty)
    means = arm_means(ratings, resamples=resamples, seed=seed)
    reference = reference_arm or sorted(ratings["arm"].unique())[0]
    return StudySummary(means, improvements(means, reference), paired_wilcoxon(ratings),
                        agreement(ratings, resamples=resamples, seed=seed), key_agreement(ratings, key))


def format_summary(summary: StudySummary) -> str:
    """Plain-text tables for the terminal."""
    parts = []
    if not summary.means.empty:
        avg = summary.means[summary.means["reader"] == AVERAGE]
        parts.append("Mean score per arm, averaged over readers (95% bootstrap interval):")
        for r in avg.itertuples():
            parts.append(f"  {r.score:9s} {r.arm:16s} {r.mean:5.2f}  [{r.ci_low:4.2f}, {r.ci_high:4.2f}]  n={r.n}")
        per = summary.means[summary.means["reader"] != AVERAGE]
        parts.append("Per reader:")
        for r in per.itertuples():
            parts.append(f"  {r.score:9s} {r.arm:16s} {r.reader:12s} {r.mean:5.2f}  [{r.ci_low:4.2f}, {r.ci_high:4.2f}]")
    if not summary.improvements.empty:
        parts.append("Change against the reference arm:")
        for r in summary.improvements.itertuples():
            parts.append(f"  {r.score:9s} {r.arm} vs {r.reference}: {r.percent:+.1f}%")
    if not summary.wilcoxon.empty:
        parts.append("Paired Wilcoxon (cases, reader-averaged):")
        for r in summary.wilcoxon.itertuples():
            parts.append(f"  {r.score:9s} {r.arm_b} − {r.arm_a}: mean diff {r.mean_difference:+.2f}, "
                         f"p = {r.p_value:.3g} (n={r.n})")
    if not summary.agreement.empty:
        parts.append("Inter-reader agreement:")
        for r in summary.agreement.itertuples():
            interval = f"  [{r.ci_low:.3f}, {r.ci_high:.3f}]" if pd.notna(r.ci_low) else ""
            parts.append(f"  {r.score:9s} {r.measure:30s} {r.readers:24s} {r.value:.3f}{interval} (n={r.n_items})")
    if summary.key_agreement is not None and not summary.key_agreement.empty:
        parts.append("Agreement with the answer key (exact, quadratic-weighted kappa):")
        for r in summary.key_agreement.itertuples():
            parts.append(f"  {r.score:9s} {r.reader:12s} exact {r.exact_agreement:.3f}  kappa {r.weighted_kappa:.3f}"
                         f" (n={r.n_items})")
    return "\n".join(parts) if parts else "no ratings yet"


def score_figure(ratings: pd.DataFrame, kind: str = "box"):
    """Plotly figure: one panel per score, a box (or violin) per arm, reader by colour."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from study.readers.rubric import SCORES

    fig = make_subplots(rows=1, cols=2, subplot_titles=[SCORES[s] for s in SCORE_COLUMNS])
    trace = go.Violin if kind == "violin" else go.Box
    for col, score in enumerate(SCORE_COLUMNS, start=1):
        for reader in sorted(ratings["reader"].unique()):
            sub = ratings[ratings["reader"] == reader]
            fig.add_trace(trace(x=sub["arm"], y=sub[score], name=reader, legendgroup=reader, showlegend=col == 1,
                                offsetgroup=reader), row=1, col=col)
        fig.update_yaxes(range=[0.5, 5.5], dtick=1, row=1, col=col)
    fig.update_layout(boxmode="group", violinmode="group", height=420)
    return fig
