"""Plotly figures for the app."""

from __future__ import annotations

import plotly.graph_objects as go


def probability_chart(probabilities: dict[str, float], thresholds: dict[str, float],
                      reference: dict[str, int] | None = None) -> go.Figure:
    """Sorted horizontal bars of finding probabilities, thresholds as ticks, positives highlighted,
    and the reference label (when known) in the hover text and the axis label."""
    items = sorted(probabilities.items(), key=lambda kv: kv[1])
    names = [n for n, _ in items]
    probs = [p for _, p in items]
    positive = [p >= thresholds.get(n, 0.5) for n, p in items]
    labels = [
        f"{n} {'●' if reference.get(n) else '○'}" if reference is not None else n for n in names
    ]
    fig = go.Figure()
    fig.add_bar(
        x=probs, y=labels, orientation="h",
        marker_color=["#d62728" if pos else "#7f9fbf" for pos in positive],
        hovertemplate="%{y}: %{x:.3f}<extra></extra>", name="probability",
    )
    fig.add_scatter(
        x=[thresholds.get(n, 0.5) for n in names], y=labels, mode="markers",
        marker=dict(symbol="line-ns-open", size=14, color="black", line=dict(width=2)),
        name="threshold", hovertemplate="threshold %{x:.3f}<extra></extra>",
    )
    title = "Finding probabilities<br>red: at or above its threshold (black tick)"
    title += "<br>● labelled present in the reference" if reference is not None else ""
    fig.update_layout(
        title=dict(text=title, font=dict(size=12)), xaxis=dict(range=[0, 1], title="probability"),
        height=560, margin=dict(l=10, r=10, t=70, b=30), showlegend=False,
    )
    return fig
