"""Reader-study statistics against values computed independently: Shrout & Fleiss's worked ICC
example, quadratic-weighted kappa by its definition and by scikit-learn, Krippendorff's alpha on his
own worked example and by the `krippendorff` package, and hand-made means."""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from sklearn.metrics import cohen_kappa_score

from study.readers.stats import (
    ALPHA,
    AVERAGE,
    agreement,
    arm_means,
    format_summary,
    icc_2_1,
    improvements,
    krippendorff_alpha,
    paired_wilcoxon,
    score_figure,
    summarize,
)

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; the paper reports
# ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_2_1_matches_shrout_and_fleiss_table():
    assert round(icc_2_1(SHROUT_FLEISS), 2) == 0.29
    assert icc_2_1(np.tile(np.arange(1, 6)[:, None], (1, 3))) == pytest.approx(1.0)  # perfect agreement


def quadratic_kappa_by_hand(a, b, k=5):
    observed = np.zeros((k, k))
    for x, y in zip(a, b):
        observed[x - 1, y - 1] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    return 1 - (w * observed).sum() / (w * expected).sum()


def ratings_table(scores: dict[str, list[int]], arms=("baseline", "v3"), cases=None, technical=None) -> pd.DataFrame:
    """Rows for readers scoring items (case × arm) in order; `scores[reader]` lists clinical scores."""
    rows = []
    for reader, values in scores.items():
        for k, value in enumerate(values):
            case, arm = divmod(k, len(arms))
            rows.append({"reader": reader, "case": f"case{case}", "arm": arms[arm], "item_code": f"I{k}",
                         "clinical": value, "technical": (technical or {}).get(reader, values)[k]})
    return pd.DataFrame(rows)


def test_weighted_kappa_in_the_agreement_table_matches_independent_values():
    rng = np.random.default_rng(0)
    a = rng.integers(1, 6, 40)
    b = np.clip(a + rng.integers(-1, 2, 40), 1, 5)
    table = ratings_table({"ann": a.tolist(), "ben": b.tolist()})
    rows = agreement(table, resamples=200).set_index(["score", "measure"])
    kappa = rows.loc[("clinical", "weighted kappa (quadratic)"), "value"]
    assert kappa == pytest.approx(cohen_kappa_score(a, b, weights="quadratic"))
    assert kappa == pytest.approx(quadratic_kappa_by_hand(a, b))
    assert rows.loc[("clinical", "ICC(2,1)"), "n_items"] == 40
    assert 0.5 < kappa < 1.0


def test_icc_in_the_agreement_table_uses_items_every_reader_rated():
    judges = ["j1", "j2", "j3", "j4"]
    rows = [{"reader": judges[j], "case": f"t{i}", "arm": "a", "item_code": f"t{i}", "clinical": int(SHROUT_FLEISS[i, j]),
             "technical": 3} for i in range(6) for j in range(4)]
    rows.append({"reader": "j1", "case": "t9", "arm": "a", "item_code": "t9", "clinical": 1, "technical": 3})  # j1 only
    result = agreement(pd.DataFrame(rows)).set_index(["score", "measure"])
    assert result.loc[("clinical", "ICC(2,1)"), "n_items"] == 6
    assert round(result.loc[("clinical", "ICC(2,1)"), "value"], 2) == 0.29


def test_means_improvements_and_wilcoxon():
    # Two readers, 10 cases, two arms: baseline scores 3 everywhere, v3 scores 3 or 4 (mean 3.3).
    v3 = [3, 4, 3, 3, 4, 3, 3, 4, 3, 3]
    scores = {r: [x for pair in zip([3] * 10, v3) for x in pair] for r in ("ann", "ben")}
    table = ratings_table(scores)
    means = arm_means(table, resamples=500, seed=1)
    avg = means[(means["reader"] == AVERAGE) & (means["score"] == "clinical")].set_index("arm")
    assert avg.loc["v3", "mean"] == pytest.approx(3.3) and avg.loc["baseline", "mean"] == pytest.approx(3.0)
    assert avg.loc["baseline", "ci_low"] == avg.loc["baseline", "ci_high"] == 3.0
    assert avg.loc["v3", "ci_low"] < 3.3 < avg.loc["v3", "ci_high"] and 3.0 <= avg.loc["v3", "ci_low"]
    per_reader = means[(means["reader"] == "ann") & (means["score"] == "clinical")].set_index("arm")
    assert per_reader.loc["v3", "n"] == 10
    gain = improvements(means, "baseline").set_index(["score", "arm"])
    assert gain.loc[("clinical", "v3"), "percent"] == pytest.approx(10.0)
    tests = paired_wilcoxon(table).set_index("score")
    expected = wilcoxon([3] * 10, v3, zero_method="zsplit")
    assert tests.loc["clinical", "p_value"] == pytest.approx(expected.pvalue)
    assert tests.loc["clinical", "mean_difference"] == pytest.approx(0.3)
    summary = summarize(table, "baseline", resamples=200)
    assert len(summary.agreement) == 6  # ICC, alpha and kappa for each of two scores
    fig = score_figure(table)
    assert len(fig.data) == 4  # a trace per reader in each of the two panels


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers × 12 units with
# missing values (None); the paper reports nominal alpha = 0.743 and, for the same data, ordinal alpha = 0.815.
KRIPPENDORFF_2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
                     [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]


def _krippendorff_ratings() -> pd.DataFrame:
    """The worked example as a ratings table: observers are readers, units are items (one case each)."""
    return pd.DataFrame([{"reader": f"r{i}", "case": f"case{u}", "arm": "v3", "item_code": f"I{u:02d}",
                          "clinical": v, "technical": v}
                         for i, row in enumerate(KRIPPENDORFF_2011) for u, v in enumerate(row) if v is not None])


def test_krippendorff_alpha_matches_the_published_example_and_the_package():
    data = np.array(KRIPPENDORFF_2011, dtype=float)  # None -> NaN, the package's missing value
    published = {"nominal": 0.743, "ordinal": 0.815}
    for level, value in published.items():
        assert round(krippendorff.alpha(reliability_data=data, level_of_measurement=level), 3) == value
    counts = np.stack([(np.nan_to_num(data.T) == g).sum(axis=1) for g in range(1, 6)], axis=1)
    assert round(krippendorff_alpha(counts), 3) == published["ordinal"]
    assert krippendorff_alpha(np.array([[2, 0, 0, 0, 0], [0, 3, 0, 0, 0]])) == 1.0  # perfect agreement
    assert np.isnan(krippendorff_alpha(np.array([[2, 0, 0, 0, 0], [3, 0, 0, 0, 0]])))  # nothing varies


def test_summary_reports_the_package_alpha_with_a_case_bootstrap_interval():
    ratings = _krippendorff_ratings()
    summary = summarize(ratings, resamples=300, seed=2)
    rows = summary.agreement.set_index(["score", "measure"])
    expected = krippendorff.alpha(reliability_data=np.array(KRIPPENDORFF_2011, dtype=float),
                                  level_of_measurement="ordinal")
    alpha = rows.loc[("clinical", ALPHA)]
    assert alpha["value"] == pytest.approx(expected) and alpha["n_items"] == 11  # unit 12 has one rating
    assert alpha["ci_low"] < expected < alpha["ci_high"] and -1 <= alpha["ci_low"] and alpha["ci_high"] <= 1
    assert rows.loc[("technical", ALPHA), "value"] == pytest.approx(expected)
    assert f"{expected:.3f}  [{alpha['ci_low']:.3f}, {alpha['ci_high']:.3f}]" in format_summary(summary)
    # Resampling cases: the same seed gives the same interval, another seed another one.
    again = agreement(ratings, resamples=300, seed=2).set_index(["score", "measure"]).loc[("clinical", ALPHA)]
    assert (again["ci_low"], again["ci_high"]) == (alpha["ci_low"], alpha["ci_high"])
