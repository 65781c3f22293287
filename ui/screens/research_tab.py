"""Research tab: a comparison of two runs side by side (a folder with comparison.json, such as the
embedded demo's own V-3 vs V-2 evaluation, the tab's default on the demo), or one evaluation's
metrics with their 95% intervals (a folder written by `rad3d metrics`, given with --eval), and its
UMAP plot when the folder has one."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

UMAP_NAMES = ("umap.html", "umap.png", "umap.svg", "umap.jpg")


def metrics_tables(meta: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(report-level metrics, per-finding F1) with value and 95% CI columns."""
    rows, per_finding = [], []
    for m in meta.get("metrics", []):
        row = {"metric": m.get("label", m.get("key")), "value": m.get("value"),
               "95% CI low": m.get("ci_low"), "95% CI high": m.get("ci_high")}
        if m.get("group") == "finding":
            if str(m.get("key", "")).startswith("f1:"):
                per_finding.append({"finding": m["key"][3:], **{k: v for k, v in row.items() if k != "metric"}})
        else:
            rows.append({**row, "implementation": m.get("implementation", "")})
    return pd.DataFrame(rows).round(4), pd.DataFrame(per_finding).round(4)


def find_umap(eval_dir: Path) -> Path | None:
    for name in UMAP_NAMES:
        if (eval_dir / name).is_file():
            return eval_dir / name
    found = sorted(p for p in eval_dir.glob("*umap*") if p.suffix in (".html", ".png", ".svg", ".jpg"))
    return found[0] if found else None


DEMO_EVALUATION_HINT = ("the embedded demo's evaluation (V-3 vs V-2 on the held-out test split) is written by "
                        "`rad3d demo evaluate`")


def build_comparison(folder: Path) -> None:
    """Two runs side by side: each one's values with intervals, and the paired difference."""
    from ui.evaluation_view import side_by_side

    try:
        view = side_by_side(folder)
    except Exception as err:
        gr.Markdown(f"⚠️ Cannot read the comparison in {folder}: {err}", elem_id="research-status")
        return
    gr.Markdown(f"### {view.report_level.columns[2]} vs {view.report_level.columns[1]}\n{view.title}",
                elem_id="research-status")
    gr.Dataframe(view.report_level, label="Report metrics", interactive=False, wrap=True,
                 elem_id="research-comparison")
    if len(view.per_finding):
        with gr.Accordion("Per-finding F1", open=False):
            gr.Dataframe(view.per_finding, interactive=False, wrap=True, elem_id="research-per-finding")


def consistency_view(folder: Path) -> tuple[str, pd.DataFrame] | None:
    """(a summary line, the per-finding table as shown) of an evaluation's report-vs-classifier
    consistency (study.consistency, the paper's Table 5 over the split); None when it has none."""
    from study.consistency import DEPENDENCY, DEPENDENCY_LABELS, read_table

    read = read_table(folder)
    if read is None:
        return None
    table, summary = read
    f1, settings = summary.get("finding_f1_macro", {}), summary.get("settings", {})
    line = (f"### Report vs classifier: `{folder.name}`, {summary.get('cases', '?')} cases\n"
            f"Truth: {summary.get('truth', '?')}. Flags (margin {settings.get('margin', '?')} logits, validation AUROC "
            f"≥ {settings.get('min_auroc', '?')}) in {summary.get('flagged_cases', '?')} cases. Finding F1 (macro) "
            f"{f1.get('draft', float('nan')):.3f} on the drafts, {f1.get('marked', float('nan')):.3f} with the guarded "
            "marks counted as statements.")
    shown = table.rename(columns={**DEPENDENCY_LABELS, "reference_positive": "ref +", "classifier_positive": "clf +",
                                  "report_positive": "report +", "flags_classifier_right": "flags, classifier right",
                                  "f1_draft": "F1 draft", "f1_marked": "F1 marked"})
    keep = ["finding", "ref +", "clf +", "report +", *(DEPENDENCY_LABELS[k] for k in DEPENDENCY), "flag_asserts",
            "flag_denies", "flag_omits", "flags, classifier right", "F1 draft", "F1 marked"]
    return line, shown[[c for c in keep if c in shown.columns]].round(3)


def build_consistency(folder: Path) -> None:
    try:
        view = consistency_view(folder)
    except Exception as err:  # a half-written or foreign file: say so, keep the tab
        gr.Markdown(f"⚠️ Cannot read the consistency table in {folder}: {err}", elem_id="research-consistency")
        return
    if view is None:
        return
    with gr.Accordion(f"Report vs classifier ({folder.name}): agreement, overrides, following a wrong classifier",
                      open=False):
        gr.Markdown(view[0], elem_id=f"research-consistency-{folder.name}")
        gr.Dataframe(view[1], interactive=False, wrap=True, elem_id=f"research-consistency-table-{folder.name}")


def build_research(eval_dir: Path | None) -> None:
    if eval_dir is None:
        gr.Markdown("No evaluation folder given. Start the app with `--eval EVAL_DIR` (a folder written by "
                    "`rad3d metrics`) to see its metrics with 95% intervals here.", elem_id="research-status")
        return
    from ui.evaluation_view import is_comparison

    if is_comparison(eval_dir):
        build_comparison(Path(eval_dir))
        for sub in sorted((p for p in Path(eval_dir).iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
            build_consistency(sub)  # each compared run's evaluation (the demo's v3/, v2/)
        return
    if not (Path(eval_dir) / "metrics.json").is_file() and not Path(eval_dir).exists():
        gr.Markdown(f"No evaluation in {eval_dir} yet: {DEMO_EVALUATION_HINT} there, or start the app with "
                    "`--eval EVAL_DIR`.", elem_id="research-status")
        return
    from study.report_card import read_evaluation

    try:
        meta, _ = read_evaluation(eval_dir)
    except Exception as err:
        gr.Markdown(f"⚠️ Cannot read the evaluation: {err}", elem_id="research-status")
        return
    boot = meta.get("bootstrap", {})
    gr.Markdown(
        f"### Run `{meta.get('run', '?')}`, variant {meta.get('variant', '?')}: {meta['n_cases']} cases\n"
        f"95% CI: {boot.get('interval', '?')} bootstrap over cases, {boot.get('resamples', '?')} resamples. "
        f"Text convention: {meta.get('text_convention', '?')}.", elem_id="research-status")
    report_level, per_finding = metrics_tables(meta)
    gr.Dataframe(report_level, label="Report metrics", interactive=False, wrap=True, elem_id="research-metrics")
    if len(per_finding):
        gr.Dataframe(per_finding, label="Per-finding F1", interactive=False, wrap=True)
    build_consistency(Path(eval_dir))
    umap = find_umap(Path(eval_dir))
    if umap is None:
        gr.Markdown("No UMAP plot in this evaluation folder (umap.html or umap.png).")
    elif umap.suffix == ".html":
        doc = html.escape(umap.read_text(errors="replace"), quote=True)
        gr.HTML(f'<iframe srcdoc="{doc}" style="width:100%;height:640px;border:0" '
                f'sandbox="allow-scripts"></iframe>', elem_id="research-umap")
    elif umap.suffix == ".svg":
        gr.HTML(umap.read_text(errors="replace"), elem_id="research-umap")
    else:  # handed over as pixels: the app serves no file from the evaluation folder
        from PIL import Image

        gr.Image(Image.open(umap).convert("RGB"), label="UMAP", interactive=False, elem_id="research-umap")


def build_logit_curve(study_dir: Path | None = None) -> None:
    """The logit-quality curve (`rad3d logit-curve`), when its study folder has a results table: V-3 − V-2
    against the AUROC of V-3's logits, the image model's own classifier marked. Nothing when there is none."""
    from study.logit_curve import (
        CURVE_METRICS,
        crossover,
        crossover_sentence,
        curve_figure,
        default_study_dir,
        read_curve,
    )

    study_dir = Path(study_dir) if study_dir is not None else default_study_dir()
    try:
        table = read_curve(study_dir)
    except Exception as err:  # a half-written or foreign file: say so, keep the tab
        gr.Markdown(f"⚠️ Cannot read the logit-quality curve in {study_dir}: {err}", elem_id="research-logit-curve")
        return
    if table is None:
        return
    cases = table["eval_cases"].dropna()
    lines = [f"### When do the logits help? (`rad3d logit-curve`, {study_dir})",
             f"V-3 trained on logits of set quality vs V-2, one recipe, {int(cases.max()) if len(cases) else '?'} "
             "evaluated cases; bars are paired-bootstrap 95% intervals, the star is the image model's own classifier."]
    lines += [f"- {title}: {crossover_sentence(crossover(table, m))}" for m, title in CURVE_METRICS]
    gr.Markdown("\n".join(lines), elem_id="research-logit-curve")
    gr.Plot(curve_figure(table), label="V-3 − V-2 against logit AUROC", elem_id="research-logit-curve-plot")
