"""Plotly figures for the app."""

from __future__ import annotations

import plotly.graph_objects as go

from engine.classifier import WEAK_AUROC, at_threshold, is_weak


def probability_chart(probabilities: dict[str, float], thresholds: dict[str, float],
                      reference: dict[str, int] | None = None,
                      valid_auroc: dict[str, float | None] | None = None) -> go.Figure:
    """Sorted horizontal bars of finding probabilities, thresholds as ticks, positives highlighted,
    the reference label (when known) in the hover text and the axis label, and, when the run
    records it, each finding's validation AUROC, with findings below WEAK_AUROC pale and marked."""
    items = sorted(probabilities.items(), key=lambda kv: kv[1])
    names = [n for n, _ in items]
    probs = [p for _, p in items]
    positive = at_threshold(probs, [thresholds.get(n, 0.5) for n in names]).tolist()
    auroc = [None if valid_auroc is None else valid_auroc.get(n) for n in names]
    weak = [is_weak(a) for a in auroc]
    labels = [
        f"{n} {'●' if reference.get(n) else '○'}" if reference is not None else n for n in names
    ]
    labels = [f"{label} ⚠" if w else label for label, w in zip(labels, weak)]
    colours = {(True, False): "#d62728", (False, False): "#7f9fbf", (True, True): "#f2b8b8", (False, True): "#d5dde6"}
    notes = ["" if a is None else f"<br>validation AUROC {a:.2f}" + (" (weak)" if w else "")
             for a, w in zip(auroc, weak)]
    fig = go.Figure()
    fig.add_bar(
        x=probs, y=labels, orientation="h", customdata=notes,
        marker_color=[colours[(pos, w)] for pos, w in zip(positive, weak)],
        hovertemplate="%{y}: %{x:.3f}%{customdata}<extra></extra>", name="probability",
    )
    fig.add_scatter(
        x=[thresholds.get(n, 0.5) for n in names], y=labels, mode="markers",
        marker=dict(symbol="line-ns-open", size=14, color="black", line=dict(width=2)),
        name="threshold", hovertemplate="threshold %{x:.3f}<extra></extra>",
    )
    title = "Finding probabilities<br>red: at or above its threshold (black tick)"
    title += "<br>● labelled present in the reference" if reference is not None else ""
    title += f"<br>⚠ pale: validation AUROC below {WEAK_AUROC}" if any(weak) else ""
    fig.update_layout(
        title=dict(text=title, font=dict(size=12)), xaxis=dict(range=[0, 1], title="probability"),
        height=580, margin=dict(l=10, r=10, t=90, b=30), showlegend=False,
    )
    return fig
