"""`rad3d sweep`: a grid of decoders × variants × prefix lengths × connector layers, each point trained
(`train_connector`) and evaluated (`evaluate_run`), collected into one table in the shape of the
paper's scaling (Table 1, Fig. 12) and ablation (Table 4) tables.

    SWEEP/runs/<point>/     the point's run (resumed if interrupted; skipped when finished)
    SWEEP/evals/<point>/    its evaluation (skipped when metrics.json exists)
    SWEEP/results.csv       one row per point: settings, parameter counts, best validation loss,
                            headline metrics with their 95% intervals
    SWEEP/results.md        the same, values only

Settings that do not apply to a variant are not swept for it: the `linear` variants have no
connector layers, `linear`/`baseline` have a fixed one-token prefix. The transformer connector's
clip length follows the prefix length (ClipCap's convention) unless --clip-len is given.
The sweep evaluates on the valid split by default, so choosing a setting from the table does not
touch the test split; pass --eval-split test for the final table of a fixed grid.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.errors import ConfigError
from training.configs import SweepConfig  # defined without torch, for the CLI

HEADLINE_METRICS = (  # (key in metrics.json, column title)
    ("bleu_1", "BLEU-1"), ("bleu_2", "BLEU-2"), ("bleu_3", "BLEU-3"), ("bleu_4", "BLEU-4"),
    ("bleu_avg", "Avg. BLEU"), ("meteor", "METEOR"), ("rouge_avg", "Avg. ROUGE (1-2)"), ("rouge_l", "ROUGE-L"),
    ("bertscore_f1", "BERTScore-F1"), ("f1_macro", "Finding F1 (macro)"), ("green_style", "GREEN-style"),
)


@dataclass(frozen=True)
class SweepPoint:
    decoder: str  # its name in SweepConfig.decoders
    variant: str
    prefix_len: int
    layers: int | None  # None: the variant has no transformer connector

    @property
    def name(self) -> str:
        layers = f"_l{self.layers}" if self.layers is not None else ""
        return f"{self.decoder}_{self.variant}_p{self.prefix_len}{layers}"


def sweep_points(decoders, variants, prefix_lens, layers) -> list[SweepPoint]:
    """The grid in the order given, without repeats where a setting does not apply to a variant."""
    from engine.variants import get_variant

    points: list[SweepPoint] = []
    for decoder, variant, p, n in itertools.product(decoders, variants, prefix_lens, layers):
        spec = get_variant(variant)
        point = SweepPoint(decoder, spec.name, spec.prefix_len or int(p), int(n) if spec.connector == "transformer" else None)
        if point not in points:
            points.append(point)
    return points


def parse_decoders(items: list[str]) -> tuple[tuple[str, str], ...]:
    """["smollm2=/models/smollm2", ...] → (("smollm2", "/models/smollm2"), ...)."""
    pairs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--decoders takes NAME=PATH items, got {item!r}")
        pairs.append((name, path))
    return tuple(pairs)


def point_finished(run: Path) -> bool:
    from training.checkpointing import find_checkpoint, read_state

    ckpt = find_checkpoint(run)
    return (run / "config.json").is_file() and ckpt is not None and read_state(ckpt).finished


def run_sweep(config: SweepConfig, *, progress: bool = True) -> pd.DataFrame:
    from engine.data import resolve
    from training.configs import EvaluateConfig, TrainConfig
    from training.connector_recipe import train_connector
    from training.evaluate import evaluate_run

    resolve(config.data)  # a refused dataset stops the sweep before anything is written
    out = Path(config.out)
    decoder_paths = dict(config.decoders)
    points = sweep_points([n for n, _ in config.decoders], config.variants, config.prefix_lens, config.layers)
    rows = []
    for i, point in enumerate(points, 1):
        run_dir, eval_dir = out / "runs" / point.name, out / "evals" / point.name
        print(f"[{i}/{len(points)}] {point.name}")
        if point_finished(run_dir):
            print("  trained already: skipped")
        else:
            train_connector(TrainConfig(
                variant=point.variant, data=config.data, cache=config.cache, decoder=decoder_paths[point.decoder],
                image_model=config.image_model, out=str(run_dir), epochs=config.epochs, lr=config.lr,
                batch_size=config.batch_size, prefix_len=point.prefix_len,
                clip_len=config.clip_len or point.prefix_len, layers=point.layers or 1,
                max_report_tokens=config.max_report_tokens, seed=config.seed, max_steps=config.max_steps,
                save_every_steps=config.save_every_steps,
            ), resume=True, progress=progress)
        if (eval_dir / "metrics.json").is_file():
            print("  evaluated already: skipped")
        else:
            evaluate_run(EvaluateConfig(
                run=str(run_dir), data=config.data, cache=config.cache, out=str(eval_dir), split=config.eval_split,
                batch_size=config.eval_batch_size, max_new_tokens=config.max_new_tokens, limit=config.eval_limit,
                run_name=point.name, bertscore_model=config.bertscore_model, bertscore=config.bertscore,
                meteor=config.meteor, resamples=config.resamples, seed=config.seed,
            ), progress=progress)
        rows.append(result_row(point, run_dir, eval_dir))
        write_results(out, pd.DataFrame(rows), config)  # partial tables stay readable while the grid runs
    return pd.DataFrame(rows)


def result_row(point: SweepPoint, run_dir: Path, eval_dir: Path) -> dict:
    """One table row from a finished run's config notes and its evaluation's metrics.json."""
    notes = json.loads((run_dir / "config.json").read_text()).get("notes", {})
    training, params = notes.get("training", {}), notes.get("parameters", {})
    doc = json.loads((eval_dir / "metrics.json").read_text())
    metrics = {m["key"]: m for m in doc.get("metrics", [])}
    row = {
        "point": point.name, "decoder": point.decoder, "variant": point.variant, "prefix_len": point.prefix_len,
        "layers": point.layers, "trainable_params": params.get("trainable"), "frozen_params": params.get("frozen"),
        "best_val_loss": training.get("best_val_loss"), "best_step": training.get("best_step"),
        "steps": training.get("total_steps"), "eval_split": doc.get("generation", {}).get("split"),
        "eval_cases": doc.get("n_cases"),
    }
    for key, _ in HEADLINE_METRICS:
        m = metrics.get(key)
        row[key] = None if m is None else m["value"]
        row[f"{key}_ci_low"] = None if m is None else m["ci_low"]
        row[f"{key}_ci_high"] = None if m is None else m["ci_high"]
    return row


def write_results(out: Path, table: pd.DataFrame, config: SweepConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(results_markdown(table, config))


def results_markdown(table: pd.DataFrame, config: SweepConfig) -> str:
    from engine.commands.params import human

    shown = [(k, t) for k, t in HEADLINE_METRICS if k in table and table[k].notna().any()]
    head = ["decoder", "variant", "prefix", "layers", "trainable", "best val loss"] + [t for _, t in shown]
    lines = [
        "# Sweep results",
        "",
        f"Evaluated on the {config.eval_split} split; each point's 95% bootstrap intervals and metric "
        "implementations are in results.csv and evals/<point>/metrics.md.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table.to_dict("records"):
        cells = [r["decoder"], r["variant"], str(r["prefix_len"]), "—" if _missing(r["layers"]) else str(int(r["layers"])),
                 "?" if _missing(r["trainable_params"]) else human(int(r["trainable_params"])),
                 "n/a" if _missing(r["best_val_loss"]) else f"{r['best_val_loss']:.4f}"]
        cells += ["n/a" if _missing(r[k]) else f"{r[k]:.4f}" for k, _ in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)
