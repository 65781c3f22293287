"""The probability chart: positives by threshold, reference marks, weak findings by validation AUROC."""

from engine.classifier import mark_weak as marked_positives
from ui.charts import WEAK_AUROC, probability_chart


def test_probability_chart_marks_positives_reference_and_weak_findings():
    probs = {"Cardiomegaly": 0.9, "Lung nodule": 0.8, "Emphysema": 0.1}
    thresholds = {"Cardiomegaly": 0.5, "Lung nodule": 0.5, "Emphysema": 0.5}
    auroc = {"Cardiomegaly": 0.97, "Lung nodule": WEAK_AUROC - 0.15, "Emphysema": None}
    fig = probability_chart(probs, thresholds, {"Cardiomegaly": 1}, auroc)
    bars = fig.data[0]
    by_name = {label.split(" ")[0]: (label, colour, note)
               for label, colour, note in zip(bars.y, bars.marker.color, bars.customdata)}
    label, colour, note = by_name["Cardiomegaly"]
    assert label == "Cardiomegaly ●" and colour == "#d62728" and "0.97" in note and "weak" not in note
    label, colour, note = by_name["Lung"]  # positive, but the classifier is weak on it: pale and marked
    assert label.endswith("⚠") and colour == "#f2b8b8" and "0.55 (weak)" in note
    label, colour, note = by_name["Emphysema"]  # negative, AUROC undefined: plain
    assert not label.endswith("⚠") and colour == "#7f9fbf" and note == ""
    assert list(bars.x) == sorted(probs.values())
    assert "AUROC below" in fig.layout.title.text

    plain = probability_chart(probs, thresholds)  # a run without recorded AUROC: nothing marked
    assert not any(label.endswith("⚠") for label in plain.data[0].y)
    assert "AUROC" not in plain.layout.title.text


def test_positives_line_marks_findings_the_classifier_is_weak_on():
    auroc = {"Cardiomegaly": 0.97, "Lung nodule": 0.55}
    assert marked_positives(["Cardiomegaly", "Lung nodule", "Emphysema"], auroc) == [
        "Cardiomegaly", "Lung nodule ⚠", "Emphysema"]
    assert marked_positives(["Lung nodule"], None) == ["Lung nodule"]
