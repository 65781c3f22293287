"""Report vs classifier consistency (study.consistency): the per-case check on hand-built drafts and
scores, the guarded marks, and the Table 5 counts and F1 over a small hand-made evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import ConfigError
from study.consistency import (
    ASSERTS,
    DENIES,
    GUARD_MARK,
    OMITS,
    ConsistencyConfig,
    check_case,
    confidence,
    dependency,
    evaluation_table,
    flagged,
    guarded_text,
    table_markdown,
)
from study.findings import FindingExtractor, FindingStatus

EXTRACTOR = FindingExtractor()
NAMES = EXTRACTOR.label_set.names


def scores(**by_name) -> list[float]:
    """Every finding at its threshold (0.5: never confident) except those named (underscored names)."""
    p = [0.5] * len(NAMES)
    for key, value in by_name.items():
        p[NAMES.index(key.replace("_", " "))] = value
    return p


THRESHOLDS = [0.5] * len(NAMES)


def by_finding(checks):
    return {c.finding: c for c in checks}


def test_asserted_denied_omitted_and_hedged_findings_against_confident_scores():
    draft = ("Heart size is normal. Pericardial effusion is seen. No pleural effusion. "
             "Possible consolidation in the right lower lobe.")
    p = scores(Cardiomegaly=0.95, Pericardial_effusion=0.05, Pleural_effusion=0.97, Consolidation=0.02, Emphysema=0.99,
               Atelectasis=0.01)
    c = by_finding(check_case(draft, p, THRESHOLDS, EXTRACTOR))
    # the draft denies cardiomegaly ("heart size is normal") and pleural effusion, both scored high
    assert c["Cardiomegaly"].disagreement == DENIES and c["Cardiomegaly"].statement == FindingStatus.NEGATIVE
    assert c["Pleural effusion"].disagreement == DENIES
    assert c["Pericardial effusion"].disagreement == ASSERTS and c["Pericardial effusion"].confidence == "low"
    assert c["Emphysema"].disagreement == OMITS and c["Emphysema"].sentence is None
    # hedged against a confident low score: the draft already asks the reader to look
    assert c["Consolidation"].statement == FindingStatus.UNCERTAIN and c["Consolidation"].disagreement is None
    # omitted and scored low: agreement
    assert c["Atelectasis"].disagreement is None and c["Atelectasis"].confidence == "low"
    assert {f.finding for f in flagged(list(c.values()))} == {"Cardiomegaly", "Pleural effusion",
                                                              "Pericardial effusion", "Emphysema"}
    # the flagged sentence is the draft's own text at its span
    for name, sentence in (("Pericardial effusion", "Pericardial effusion is seen."),
                           ("Pleural effusion", "No pleural effusion."), ("Cardiomegaly", "Heart size is normal.")):
        lo, hi = c[name].span
        assert draft[lo:hi] == sentence == c[name].sentence


def test_agreeing_draft_has_no_flag_and_the_calls_follow_the_threshold():
    draft = "Cardiomegaly. Bilateral pleural effusion. No emphysema."
    p = scores(Cardiomegaly=0.9, Pleural_effusion=0.99, Emphysema=0.01)
    checks = check_case(draft, p, THRESHOLDS, EXTRACTOR)
    assert flagged(checks) == []
    calls = {c.finding: c.positive for c in checks}
    assert calls["Cardiomegaly"] and not calls["Emphysema"] and calls["Medical material"]  # 0.5 ≥ 0.5


def test_confidence_margin_weak_findings_and_uncallable_findings():
    cfg = ConsistencyConfig(margin=1.0, min_auroc=0.7)
    t = 0.5  # logit 0: confident at |logit(p)| ≥ 1
    assert confidence(1 / (1 + math.exp(-1.01)), t, None, cfg) == "high"
    assert confidence(1 / (1 + math.exp(-0.99)), t, None, cfg) == "unsure"
    assert confidence(1 / (1 + math.exp(1.01)), t, 0.9, cfg) == "low"
    assert confidence(0.999, t, 0.69, cfg) == "weak"  # validation AUROC below min_auroc
    assert confidence(0.0, 1.0, 0.99, cfg) == "weak"  # a threshold of 1: never called positive
    # a weak finding is never flagged, however the draft disagrees
    auroc = dict.fromkeys(NAMES, 0.9) | {"Cardiomegaly": 0.6}
    c = by_finding(check_case("No cardiomegaly.", scores(Cardiomegaly=0.999), THRESHOLDS, EXTRACTOR,
                              valid_auroc=auroc))
    assert c["Cardiomegaly"].confidence == "weak" and c["Cardiomegaly"].disagreement is None
    # a wider margin turns the same score from a flag into agreement
    p = scores(Emphysema=0.8)
    assert by_finding(check_case("", p, THRESHOLDS, EXTRACTOR))["Emphysema"].disagreement == OMITS
    assert by_finding(check_case("", p, THRESHOLDS, EXTRACTOR,
                                 config=ConsistencyConfig(margin=2.0)))["Emphysema"].disagreement is None


def test_config_round_trips_and_refuses_bad_values():
    cfg = ConsistencyConfig(margin=0.5, min_auroc=0.8, guarded=True)
    assert ConsistencyConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="margin"):
        ConsistencyConfig(margin=-1)
    with pytest.raises(ConfigError, match="AUROC"):
        ConsistencyConfig(min_auroc=1.5)
    with pytest.raises(ConfigError, match="18 findings"):
        check_case("", [0.5] * 3, THRESHOLDS, EXTRACTOR)


def test_guarded_text_keeps_the_draft_and_marks_each_flag():
    draft = "Pericardial effusion is seen. No pleural effusion."
    checks = check_case(draft, scores(Pericardial_effusion=0.02, Pleural_effusion=0.98, Emphysema=0.97),
                        THRESHOLDS, EXTRACTOR)
    marked = guarded_text(draft, checks)
    assert marked.startswith(draft + "\n")
    marks = marked[len(draft) + 1:].split("\n")
    assert len(marks) == 3 and all(m.startswith(GUARD_MARK) for m in marks)
    assert f"{GUARD_MARK} Emphysema scored confidently high (p = 0.97, threshold 0.50); the draft does not mention it." in marks
    assert guarded_text(draft, check_case(draft, scores(), THRESHOLDS, EXTRACTOR)) == draft


def test_dependency_counts_on_a_hand_made_table():
    # 6 cases × 1 finding: (report, classifier, truth)
    rows = [(1, 1, 1), (0, 0, 0), (1, 1, 0), (0, 1, 0), (1, 0, 1), (0, 1, 1)]
    r, c, t = (np.array([[row[i]] for row in rows]) for i in range(3))
    counts = {k: int(v[0]) for k, v in dependency(r, c, t).items()}
    assert counts == {"agreement": 2, "follows_wrong_classifier": 1, "overrides_correctly": 2,
                      "overrides_incorrectly": 1}


def hand_made_table():
    """Four cases with known Table 5 counts, flags and F1 (asserted here; the Research tab's test reads it)."""
    i_pe, i_em = NAMES.index("Pleural effusion"), NAMES.index("Emphysema")
    drafts = ["Bilateral pleural effusion.",  # agrees with a confident high score, and is right
              "No acute pathology.",  # omits a confident pleural effusion that is there: flag, classifier right
              "Emphysema.",  # asserts emphysema against a confident low score, and is right: flag, classifier wrong
              "No acute pathology."]
    references = ["Bilateral pleural effusion.", "Left pleural effusion.", "Centrilobular emphysema.", "Normal study."]
    probs = np.full((4, len(NAMES)), 0.5)
    probs[:, i_pe] = [0.99, 0.99, 0.01, 0.01]
    probs[:, i_em] = [0.01, 0.01, 0.01, 0.01]
    truth = np.zeros((4, len(NAMES)))
    truth[[0, 1], i_pe] = 1
    truth[2, i_em] = 1
    table = evaluation_table([f"c{i}" for i in range(4)], drafts, probs, THRESHOLDS, truth, references, EXTRACTOR)
    rows = table.findings.set_index("finding")
    pe, em = rows.loc["Pleural effusion"], rows.loc["Emphysema"]
    assert (pe.agreement, pe.follows_wrong_classifier, pe.overrides_correctly, pe.overrides_incorrectly) == (3, 0, 0, 1)
    assert (pe.flag_omits, pe.flags_classifier_right) == (1, 1)
    assert (em.agreement, em.overrides_correctly, em.flag_asserts, em.flags_classifier_right) == (3, 1, 1, 0)
    # finding F1 against the reference texts: pleural effusion 2·1/(2·1+1) on the drafts, 1 once marked;
    # emphysema 1 on the drafts, undefined once its only positive is marked away (0 TP, 1 FN → 0)
    assert pe.f1_draft == pytest.approx(2 / 3) and pe.f1_marked == pytest.approx(1.0)
    assert em.f1_draft == pytest.approx(1.0) and em.f1_marked == pytest.approx(0.0)
    assert table.summary["finding_f1_macro"]["draft"] == pytest.approx((2 / 3 + 1) / 2)
    assert table.summary["flagged_cases"] == 2
    assert table.guarded[0] == drafts[0] and table.guarded[1].startswith(drafts[1] + "\n" + GUARD_MARK)
    assert len(table.cases) == 4 * len(NAMES)
    md = table_markdown(table)
    assert "| Pleural effusion | 2 | 2 | 1 | 3 | 0 | 0 | 1 | 0/0/1 | 1 | 0.667 | 1.000 |" in md
    return table


def test_evaluation_table_counts_flags_and_guarded_f1():
    hand_made_table()


def test_rad3d_report_flags_a_case_built_to_disagree(tmp_path, tiny_tokenizer, capsys):  # noqa: F811
    """`rad3d report` (text and --json): the statements beside the scores, the three disagreements with
    the draft's sentences, the guarded marks after the unchanged draft."""
    import json

    from cli import main
    from conftest import chest_phantom, lps_affine, write_nifti
    from consistency_fixtures import ASSERTED, DENIED, DRAFT, OMITTED, make_disagreeing_run
    from engine.io import load_volume

    path = write_nifti(tmp_path / "chest.nii.gz", chest_phantom(), lps_affine((5.0, 5.0, 10.0)))
    run = make_disagreeing_run(tmp_path / "built", tiny_tokenizer, load_volume(path))
    assert main(["report", str(path), "--run", str(run), "--json", "--guarded", "--max-new-tokens", "32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"] == DRAFT  # never rewritten
    findings = {f["finding"]: f for f in out["consistency"]["findings"]}
    assert sorted(out["consistency"]["flags"]) == sorted([ASSERTED, DENIED, OMITTED])
    assert findings[ASSERTED]["disagreement"] == ASSERTS and findings[ASSERTED]["sentence"] == "Hiatal hernia is noted."
    assert findings[DENIED]["disagreement"] == DENIES and findings[DENIED]["statement"] == "negative"
    lo, hi = findings[DENIED]["span"]
    assert DRAFT[lo:hi] == "No lymphadenopathy in the mediastinum"
    assert findings[OMITTED]["disagreement"] == OMITS and findings[OMITTED]["sentence"] is None
    assert out["guarded_report"].startswith(DRAFT + "\n") and out["guarded_report"].count(GUARD_MARK) == 3

    assert main(["report", str(path), "--run", str(run), "--max-new-tokens", "32"]) == 0
    text = capsys.readouterr().out
    assert "Report vs classifier: 3 finding(s) flagged" in text
    assert "⚑ Hiatal hernia (p = " in text and "»Hiatal hernia is noted.«" in text
    assert GUARD_MARK not in text  # marks only when asked for
