"""`rad3d demo rethreshold`: choose the shipped demo image model's per-finding thresholds again, by
the project's threshold rule (engine.classifier.choose_thresholds), without retraining anything.

    1. the recipe's valid and test phantoms into a scratch demo home (deterministic by seed)
    2. their latents and classifier logits with the shipped image model (engine.embedding, the
       path `rad3d demo build` embeds with), so every number is measured on the shipped weights
    3. thresholds chosen on valid; the report on valid and test
    4. rewritten in the shipped folder: image/image_model.json and runs/*/config.json (thresholds,
       valid AUROC, notes.thresholds), image/classifier_report.csv/.md, image/split_probabilities.csv
       (the probabilities and truth the thresholds were chosen from, so a test re-derives them), and
       manifest.json: the new sha256s, with the old ones under "replaces" so that the next
       `rad3d demo build` brings an already installed demo home up to date.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from engine.model_configs import DEFAULT_MIN_SPECIFICITY, DEFAULT_THRESHOLD_METHOD

SPLITS = ("valid", "test")
PROBABILITIES = "split_probabilities.csv"  # in image/: split, volume_name, p:<finding>..., y:<finding>...
REPORT_TITLE = "Demo encoder + classifier trained end to end on phantoms"


def shipped_probabilities(home: Path, recipe, image: Path, *, progress: bool = True):
    """{split: (volume names, (N, n_labels) probabilities, (N, n_labels) 0/1 truth)} of the recipe's
    valid and test phantoms through the image model folder `image`, and its label set."""
    from engine.cache import EmbeddingCache
    from engine.data import resolve
    from engine.embedding import embed_with_image_model
    from engine.errors import DatasetError
    from engine.image_model import open_image_model
    from training.demo.build import DemoPaths, ensure_phantoms
    from training.image_model_common import check_label_sets_agree, labelled_split

    paths = DemoPaths(Path(home))
    ensure_phantoms(paths, recipe, progress=progress, splits=SPLITS)
    summary = embed_with_image_model(paths.data, paths.cache, image, splits=SPLITS, progress=progress)
    if summary.failed:
        raise DatasetError(f"{len(summary.failed)} phantom(s) could not be embedded", paths.data,
                           problems=[f"{n}: {e}" for n, e in summary.failed.items()])
    label_set = open_image_model(image, with_encoder=False).label_set
    dataset = resolve(paths.data, section=None)
    check_label_sets_agree(dataset.label_set, label_set, "the shipped image model", image)
    cache = EmbeddingCache.open(paths.cache)
    out = {}
    for split in SPLITS:
        cases = labelled_split(dataset, split)
        _, logits = cache.stack(cases.volume_names, with_logits=True)
        out[split] = (cases.volume_names, 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64))), cases.labels)
    return out, label_set


def write_probabilities(path: Path, split_data: dict, names) -> None:
    import pandas as pd

    frames = []
    for split, (volumes, probs, truth) in split_data.items():
        frame = pd.DataFrame({"split": split, "volume_name": volumes})
        frame = pd.concat([frame, pd.DataFrame(probs, columns=[f"p:{n}" for n in names]),
                           pd.DataFrame(np.asarray(truth).astype(int), columns=[f"y:{n}" for n in names])], axis=1)
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)  # repr: read back bit for bit


def read_probabilities(path: Path, names) -> dict:
    """What write_probabilities wrote: {split: (volume names, probabilities, truth)}."""
    import pandas as pd

    table = pd.read_csv(path)  # pandas 3 reads floats back bit for bit
    return {split: (part.volume_name.tolist(), part[[f"p:{n}" for n in names]].to_numpy(float),
                    part[[f"y:{n}" for n in names]].to_numpy(int))
            for split, part in table.groupby("split", sort=False)}


def mean_positives(probs, thresholds) -> float:
    """Findings called positive per case (engine.classifier.at_threshold), averaged over cases."""
    from engine.classifier import at_threshold

    return float(at_threshold(probs, thresholds).sum(1).mean())


def rethreshold(folder: Path, split_data: dict, label_set, *, method: str = DEFAULT_THRESHOLD_METHOD,
                min_specificity: float = DEFAULT_MIN_SPECIFICITY):
    """Choose thresholds on split_data["valid"] and rewrite the shipped folder's files that hold them
    (see the module docstring); returns the classification report (DataFrame, valid and test)."""
    from engine.classifier import choose_thresholds, threshold_rule
    from training.demo.shipped import read_manifest
    from training.image_model_common import per_label_auroc, report_table, write_report

    folder = Path(folder)
    manifest = read_manifest(folder)
    names = label_set.names
    thresholds = choose_thresholds(split_data["valid"][1], split_data["valid"][2], method, min_specificity)
    table = report_table({s: split_data[s][1] for s in SPLITS}, {s: split_data[s][2] for s in SPLITS}, thresholds,
                         label_set)
    rule = threshold_rule(method, min_specificity)
    record = {"method": method, "min_specificity": min_specificity, "rule": rule,
              "chosen_on": f"valid split ({len(split_data['valid'][0])} phantoms), shipped weights",
              "by": "rad3d demo rethreshold"}
    auroc = per_label_auroc(table, "valid", names)
    before = {rel: _digests(folder, rel, manifest) for rel in _rewritten(manifest)}

    _rewrite_image_model(folder / "image" / "image_model.json", thresholds, auroc, record, table)
    for variant in manifest["variants"]:
        _rewrite_run_config(folder / "runs" / variant / "config.json", thresholds, auroc, record)
    write_report(folder / "image", table, f"{REPORT_TITLE} ({label_set.name})", rule=rule)
    write_probabilities(folder / "image" / PROBABILITIES, split_data, names)
    _update_manifest(folder, manifest, before, record)
    return table


def _rewritten(manifest: dict) -> list[str]:
    return (["image/image_model.json", "image/classifier_report.md", "image/classifier_report.csv",
             f"image/{PROBABILITIES}"] + [f"runs/{v}/config.json" for v in manifest["variants"]])


def _digests(folder: Path, rel: str, manifest: dict) -> set[str]:
    """A file's sha256 as shipped and as installed (configs get provenance stamped on install)."""
    from training.demo.shipped import _installed_bytes

    path = folder / rel
    if rel not in manifest["files"] or not path.is_file():
        return set()
    stamped = _installed_bytes(rel, path, manifest)
    return {manifest["files"][rel]} | ({hashlib.sha256(stamped).hexdigest()} if stamped is not None else set())


def _rewrite_image_model(path: Path, thresholds, auroc, record: dict, table) -> None:
    from engine.config import read_json, write_json
    from engine.rundir import ImageModelConfig, json_floats
    from training.image_model_common import macro_auroc

    doc = read_json(path, "image model config")
    doc["classifier"]["thresholds"] = [float(t) for t in thresholds]
    doc["classifier"]["valid_auroc"] = json_floats(auroc)
    doc.setdefault("notes", {})["thresholds"] = record
    doc["notes"]["macro_auroc"] = {s: macro_auroc(table, s) for s in SPLITS}
    ImageModelConfig.from_dict(doc, path)  # still a valid image model config
    write_json(path, doc)


def _rewrite_run_config(path: Path, thresholds, auroc, record: dict) -> None:
    import dataclasses

    from engine.config import read_json
    from engine.rundir import RunConfig, json_floats

    config = RunConfig.from_dict(read_json(path, "run config"), path)
    classifier = dataclasses.replace(config.classifier, thresholds=[float(t) for t in thresholds],
                                     valid_auroc=json_floats(auroc))
    config = dataclasses.replace(config, classifier=classifier, notes={**config.notes, "thresholds": record})
    path.write_text(json.dumps(config.to_dict(), indent=1) + "\n")  # the export's format (shipped.py)


def _update_manifest(folder: Path, manifest: dict, before: dict[str, set[str]], record: dict) -> None:
    from engine.provenance import sha256_of_file
    from training.demo.shipped import MANIFEST

    replaces = manifest.setdefault("replaces", {})
    for rel in before:
        manifest["files"][rel] = sha256_of_file(folder / rel)
    for rel, old in before.items():
        now = _digests(folder, rel, manifest)  # this version, as shipped and as installed, is not an earlier one
        earlier = [d for d in replaces.get(rel, []) + sorted(old) if d not in now]
        if earlier:
            replaces[rel] = list(dict.fromkeys(earlier))
    step = "rad3d demo rethreshold (thresholds chosen on the valid split with the shipped weights)"
    if step not in manifest["made_by"]:
        manifest["made_by"].append(step)
    manifest["thresholds"] = {k: record[k] for k in ("method", "min_specificity", "rule")}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
