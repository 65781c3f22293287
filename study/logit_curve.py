"""The logit-quality curve's table, crossover and figure: V-3 − V-2 (finding F1 macro, GREEN-style; paired
bootstrap 95% intervals) against the macro AUROC of the logits V-3 read, measured on the evaluated cases.
`rad3d logit-curve` (training/logit_curve.py) writes STUDY/results.csv (STUDY: --out, by default
$RAD3D_HOME/logit-curve) in the columns below; the app's Research tab reads it back (`read_curve`).

results.csv, one row per point:
    point, kind ("synthetic": logits from the labels at target_auroc; "real": the image model's classifier;
    "reference": V-2, no logits), variant, target_auroc, scale, auroc (+ _ci_low, _ci_high),
    for m in CURVE_METRICS: m (+ _ci_low, _ci_high) and diff_m (+ _ci_low, _ci_high, _p): V-3 − V-2.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

CURVE_METRICS = (("f1_macro", "Finding F1 (macro)"), ("green_style", "GREEN-style"))
RESULTS = "results.csv"
FIGURE_HTML, FIGURE_PNG = "logit_curve.html", "logit_curve.png"


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def crossover(table: pd.DataFrame, metric: str = "f1_macro") -> dict:
    """Where V-3 starts to beat V-2 for good along the synthetic points, by measured AUROC: `interpolated`,
    the AUROC where the straight line from the last point at or below 0 to the next one crosses 0 (None
    when V-3 is behind at the highest point, or ahead at every point: `ahead_at_lowest`);
    `first_significant`, the lowest AUROC from which on every point's interval lies above 0 (or None)."""
    rows = table[table["kind"] == "synthetic"].dropna(subset=["auroc", f"diff_{metric}"]).sort_values("auroc")
    x, d, low = rows["auroc"].tolist(), rows[f"diff_{metric}"].tolist(), rows[f"diff_{metric}_ci_low"].tolist()
    behind = [i for i, v in enumerate(d) if v <= 0]
    interpolated = None
    if behind and behind[-1] < len(d) - 1:
        i = behind[-1]
        interpolated = x[i] + (x[i + 1] - x[i]) * (0 - d[i]) / (d[i + 1] - d[i])
    first = next((x[i] for i in range(len(x)) if all(_finite(v) and v > 0 for v in low[i:])), None)
    return {"metric": metric, "interpolated": interpolated, "first_significant": first,
            "ahead_at_lowest": bool(d) and not behind, "points": len(x)}


def curve_markdown(table: pd.DataFrame) -> str:
    """results.md: the points and each metric's crossover, in words."""
    lines = ["# Logit-quality curve: V-3 − V-2 against the logits' macro AUROC", "",
             "| point | AUROC (95% CI) | " + " | ".join(f"{t} | V-3 − V-2 (95% CI), p" for _, t in CURVE_METRICS) + " |",
             "|---|---|" + "---|---|" * len(CURVE_METRICS)]
    for r in table.to_dict("records"):
        cells = [r["point"], _with_ci(r, "auroc")]
        for m, _ in CURVE_METRICS:
            diff = "—" if r["kind"] == "reference" else _with_ci(r, f"diff_{m}") + \
                ("" if not _finite(r.get(f"diff_{m}_p")) else f", p = {r[f'diff_{m}_p']:.3g}")
            cells += [_with_ci(r, m), diff]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for m, title in CURVE_METRICS:
        lines.append(f"- {title}: {crossover_sentence(crossover(table, m))}")
    return "\n".join(lines) + "\n"


def crossover_sentence(c: dict) -> str:
    if c["points"] < 2:
        return "fewer than two synthetic points: no crossover can be read."
    where = "not crossed within the levels measured" if c["interpolated"] is None else \
        f"V-3 − V-2 crosses 0 at AUROC ≈ {c['interpolated']:.3f} (linear between points)"
    if c["ahead_at_lowest"]:
        where = "V-3 is ahead already at the lowest level"
    sig = "no level has an interval above 0" if c["first_significant"] is None else \
        f"the interval lies above 0 from AUROC {c['first_significant']:.3f} on"
    return f"{where}; {sig}."


def _with_ci(r: dict, key: str) -> str:
    if not _finite(r.get(key)):
        return "n/a"
    low, high = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    ci = f" ({low:.3f}, {high:.3f})" if _finite(low) and _finite(high) else ""
    return f"{r[key]:.3f}{ci}"


def curve_figure(table: pd.DataFrame):
    """One panel per metric: V-3 − V-2 with its interval at each synthetic point (a line, by measured AUROC),
    the image model's real classifier as a marked point, and the zero line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(CURVE_METRICS), subplot_titles=[t for _, t in CURVE_METRICS])
    synthetic = table[table["kind"] == "synthetic"].sort_values("auroc")
    real = table[table["kind"] == "real"]
    for col, (m, title) in enumerate(CURVE_METRICS, 1):
        for rows, name, style in ((synthetic, "synthetic logits (from the labels)",
                                   dict(mode="lines+markers", marker=dict(size=8, color="#1f77b4"))),
                                  (real, "the image model's classifier",
                                   dict(mode="markers", marker=dict(size=16, symbol="star", color="#d62728")))):
            if rows.empty:
                continue
            diff = rows[f"diff_{m}"]
            fig.add_trace(go.Scatter(
                x=rows["auroc"], y=diff, name=name, legendgroup=name, showlegend=col == 1,
                error_y=dict(type="data", symmetric=False, array=rows[f"diff_{m}_ci_high"] - diff,
                             arrayminus=diff - rows[f"diff_{m}_ci_low"]),
                text=rows["point"], hovertemplate="%{text}<br>AUROC %{x:.3f}<br>V-3 − V-2 %{y:.3f}<extra></extra>",
                **style), row=1, col=col)
        fig.add_hline(y=0, line=dict(color="grey", dash="dash"), row=1, col=col)
        fig.update_xaxes(title_text="macro AUROC of V-3's logits (evaluated cases)", row=1, col=col)
        fig.update_yaxes(title_text=f"V-3 − V-2, {title} (95% CI)", row=1, col=col)
    fig.update_layout(title="When do diagnostic logits help? V-3 − V-2 against logit quality",
                      template="plotly_white", width=1100, height=480, legend=dict(orientation="h", y=-0.2))
    return fig


def write_curve(table: pd.DataFrame, out: str | Path, *, png: bool = True) -> dict:
    """results.md, the figure as HTML (plotly.js inside: opens offline) and, when `png` and plotly can export
    (kaleido and a Chrome/Chromium), as PNG. Returns {"html", "png", "png_note"}."""
    out = Path(out)
    (out / "results.md").write_text(curve_markdown(table))
    fig = curve_figure(table)
    fig.write_html(out / FIGURE_HTML, include_plotlyjs=True)
    written = {"html": str(out / FIGURE_HTML), "png": None, "png_note": "not asked (--no-png)"}
    if png:
        try:
            fig.write_image(out / FIGURE_PNG, scale=2)
            written.update(png=str(out / FIGURE_PNG), png_note="plotly + kaleido")
        except Exception as err:  # kaleido missing or no Chrome: the HTML stands, the reason is said
            written["png_note"] = f"PNG not written ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    return written


def default_study_dir() -> Path:
    """Where `rad3d logit-curve` writes without --out, and where the app's Research tab looks."""
    from engine.home import rad3d_home

    return rad3d_home() / "logit-curve"


def read_curve(study_dir: str | Path) -> pd.DataFrame | None:
    """The study folder's results table, or None when it has none yet."""
    path = Path(study_dir) / RESULTS
    return pd.read_csv(path) if path.is_file() else None
