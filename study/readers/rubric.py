"""The reader-study rubric of the RAD3D-Prefix paper (appendix "Reader Study"): two scores on a
1–5 scale, each with the criteria the readers judge it by."""

from __future__ import annotations

SCALE: dict[int, str] = {1: "Very poor", 2: "Poor", 3: "Acceptable", 4: "Good", 5: "Excellent"}

SCORES: dict[str, str] = {"clinical": "Clinical accuracy", "technical": "Technical & linguistic quality"}

# Criterion key → wording shown beside its checkbox, per score.
CRITERIA: dict[str, dict[str, str]] = {
    "clinical": {
        "findings_correct": "Correct identification of presence/absence of findings",
        "no_hallucination": "No hallucinated (false positive) findings",
        "errors_harmless": "Errors would not meaningfully affect diagnosis or management",
        "location_correct": "Correct anatomical location and placement of findings",
    },
    "technical": {
        "no_repetition": "No repetition or redundancy",
        "no_truncation": "No incomplete or truncated sentences",
        "no_artifacts": 'No strange symbols or artifacts (e.g. "#", "?", "Question")',
    },
}

ALL_CRITERIA: dict[str, str] = {k: v for group in CRITERIA.values() for k, v in group.items()}


def scale_label(score: int) -> str:
    return f"{score} = {SCALE[score]}"
