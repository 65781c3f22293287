"""`rad3d logit-curve`: how good must the classifier be for V-3's logits to help? V-3 is trained and evaluated
on synthetic logits of chosen macro AUROCs (training/synthetic_logits.py: from the labels, a·(2y − 1) + N(0, 1)),
once on the image model's own logits (the marked point), and V-2 once, all by one connector recipe on the same
cached latents (only the logit input differs); each V-3 is compared with V-2 on the same cases (paired bootstrap).

    STUDY/runs/<point>/         the point's run (resumed when interrupted, skipped when finished)
    STUDY/evals/<point>/        its evaluation (skipped when metrics.json exists); a synthetic point's classifier
                                AUROC there is that of its synthetic logits (the calibration, measured)
    STUDY/comparisons/<point>.json   V-3 − V-2 with paired 95% intervals (study.metrics.paired)
    STUDY/results.csv, results.md    one row per point (columns: study/logit_curve.py), crossovers in words
    STUDY/logit_curve.html, .png     the figure (PNG when plotly can export it)
    STUDY/progress.json         each point's state and seconds, rewritten as the work goes
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training.configs import LogitCurveConfig
from training.synthetic_logits import SyntheticLogits

REFERENCE, REAL = "v2", "v3-real"


@dataclass(frozen=True)
class CurvePoint:
    name: str
    variant: str
    logits: SyntheticLogits | None = None  # None: the cache's classifier logits (V-3) or none (V-2)

    @property
    def kind(self) -> str:
        return "reference" if self.variant == "v2" else "real" if self.logits is None else "synthetic"


def curve_points(config: LogitCurveConfig) -> list[CurvePoint]:
    """V-2 first (every comparison needs it), then V-3 on the real logits, then the levels in order."""
    points = [CurvePoint(REFERENCE, "v2")] + ([CurvePoint(REAL, "v3")] if config.real else [])
    return points + [CurvePoint(f"v3-auroc-{level:.2f}", "v3", SyntheticLogits(level, config.noise_seed))
                     for level in config.levels]


class Progress:
    """STUDY/progress.json: every point's state (pending, trained, evaluated) and the seconds spent on it in
    the call that did the work, rewritten atomically at each change."""

    def __init__(self, out: Path, points: list[CurvePoint]):
        from engine.config import read_json

        self.path = out / "progress.json"
        old = read_json(self.path, "progress file") if self.path.is_file() else {}
        self.points = {p.name: {"state": "pending", **old.get("points", {}).get(p.name, {})} for p in points}

    def update(self, name: str, **fields) -> None:
        from engine.config import write_json

        self.points[name].update(fields)
        done = sum(p["state"] == "evaluated" for p in self.points.values())
        write_json(self.path, {"command": "rad3d logit-curve", "done": done, "total": len(self.points),
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "points": self.points})


def run_logit_curve(config: LogitCurveConfig, *, progress: bool = True,
                    time_limit_s: float | None = None) -> pd.DataFrame | None:
    """Train, evaluate and compare every point not done yet; write the table and the figure. With
    `time_limit_s`, training stops at a checkpoint when the time is up and None is returned: rerun to go on."""
    from tqdm.auto import tqdm

    from engine.data import resolve
    from study.logit_curve import default_study_dir, write_curve

    resolve(config.data)  # a refused dataset stops the study before anything is written
    out = Path(config.out) if config.out else default_study_dir()
    out.mkdir(parents=True, exist_ok=True)
    points = curve_points(config)
    log = Progress(out, points)
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    bar = tqdm(points, desc="logit curve", unit="point", disable=not progress)
    for point in bar:
        bar.set_postfix(point=point.name)
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)  # 0: one step, then stop
        if not _train_point(config, point, out, log, progress, left):
            print(f"{point.name}: stopped at the time limit with a checkpoint; rerun the command to continue")
            return None
        _evaluate_point(config, point, out, log, progress)
    bar.close()
    table = pd.DataFrame([result_row(config, p, out) for p in points])
    table.to_csv(out / "results.csv", index=False)
    written = write_curve(table, out, png=config.png)
    print(f"wrote {out / 'results.csv'}, {written['html']}; png: {written['png'] or written['png_note']}")
    return table


def _train_point(config: LogitCurveConfig, point: CurvePoint, out: Path, log: Progress, progress: bool,
                 time_limit_s: float | None) -> bool:
    """Train the point unless finished; False when the time limit stopped it first."""
    from training.connector_recipe import train_connector
    from training.sweep import point_finished

    run = out / "runs" / point.name
    if point_finished(run):
        print(f"{point.name}: trained already: skipped")
    else:
        start = time.perf_counter()
        result = train_connector(config.train_config(point.variant, str(run)), resume=True, progress=progress,
                                 logits=point.logits, time_limit_s=time_limit_s)
        seconds = round(time.perf_counter() - start + log.points[point.name].get("train_s", 0.0), 1)
        log.update(point.name, train_s=seconds, step=result.step, total_steps=result.total_steps)
        if not result.finished:
            return False
    if log.points[point.name]["state"] == "pending":
        log.update(point.name, state="trained")
    return True


def _evaluate_point(config: LogitCurveConfig, point: CurvePoint, out: Path, log: Progress, progress: bool) -> None:
    from training.evaluate import evaluate_run

    run, evals = out / "runs" / point.name, out / "evals" / point.name
    if (evals / "metrics.json").is_file():
        print(f"{point.name}: evaluated already: skipped")
    else:
        start = time.perf_counter()
        evaluate_run(config.evaluate_config(str(run), str(evals), point.name), progress=progress, logits=point.logits)
        log.update(point.name, eval_s=round(time.perf_counter() - start, 1))
    log.update(point.name, state="evaluated")


def result_row(config: LogitCurveConfig, point: CurvePoint, out: Path) -> dict:
    """One row of results.csv (study/logit_curve.py's columns) from the point's evaluation and its paired
    comparison with V-2 (written to STUDY/comparisons/<point>.json)."""
    from engine.config import read_json, write_json
    from study.logit_curve import CURVE_METRICS
    from study.metrics.paired import compare_evaluations

    doc = read_json(out / "evals" / point.name / "metrics.json", "evaluation")
    metrics = {m["key"]: m for m in doc.get("metrics", [])}
    row = {"point": point.name, "kind": point.kind, "variant": point.variant,
           "target_auroc": None if point.logits is None else point.logits.target_auroc,
           "scale": None if point.logits is None else point.logits.scale, "eval_cases": doc.get("n_cases")}
    for key, column in [("auroc_macro", "auroc")] + [(m, m) for m, _ in CURVE_METRICS]:
        m = metrics.get(key, {})
        row.update({column: m.get("value"), f"{column}_ci_low": m.get("ci_low"), f"{column}_ci_high": m.get("ci_high")})
    if point.kind != "reference":
        comparison = compare_evaluations(out / "evals" / REFERENCE, out / "evals" / point.name,
                                         resamples=config.resamples, seed=config.seed)
        write_json(out / "comparisons" / f"{point.name}.json", comparison)
        paired = {m["key"]: m for m in comparison["metrics"]}
        for m, _ in CURVE_METRICS:
            p = paired.get(m, {})
            row.update({f"diff_{m}": p.get("difference"), f"diff_{m}_ci_low": p.get("ci_low"),
                        f"diff_{m}_ci_high": p.get("ci_high"), f"diff_{m}_p": p.get("p_value")})
    return row
