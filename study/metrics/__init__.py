"""Report metrics: n-gram metrics under a named text convention, BERTScore with an offline encoder,
clinical correctness from extracted findings, all with case-bootstrap intervals."""

from study.metrics.text import CONVENTIONS, DEFAULT_CONVENTION, clean_report_mimic_cxr, text_convention

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "clean_report_mimic_cxr", "text_convention", "evaluate_predictions",
           "write_evaluation", "EvaluationResult"]


def __getattr__(name):  # heavy parts load on first use
    if name in ("evaluate_predictions", "EvaluationResult", "MetricValue"):
        from study.metrics import evaluate

        return getattr(evaluate, name)
    if name == "write_evaluation":
        from study.report_card import write_evaluation

        return write_evaluation
    raise AttributeError(name)
