"""What the two image-model recipes share: the train/valid/test labels of a dataset, writing the
image-model folder, the per-class report on valid and test, and folding an input affine into the
first layer of a trained AbnormalityHead.

    IMAGE/image_model.json          engine.rundir.ImageModelConfig (label set, preprocessing, specs,
                                    provenance: the dataset trained on and the encoder's own)
    IMAGE/encoder.safetensors       CT-CLIP key names (train-encoder), or a path to the weights used
    IMAGE/classifier.safetensors    AbnormalityHead
    IMAGE/classifier_report.csv/.md per-class AUROC, F1, sensitivity, specificity on valid and test
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.classifier import WEAK_AUROC, AbnormalityHead, classification_report
from engine.errors import ConfigError, DatasetError, Rad3dError
from engine.labels import LabelSet
from engine.provenance import PROJECT_LICENCE, Provenance, describe_dataset, describe_encoder
from engine.rundir import ClassifierSpec, EncoderSpec, ImageModelConfig, json_floats, save_image_model

REPORT_SPLITS = ("valid", "test")
CLASSIFIER_FILE = "classifier.safetensors"
REPORT_CSV = "classifier_report.csv"
REPORT_MD = "classifier_report.md"


@dataclass
class LabelledSplit:
    name: str
    volume_names: list[str]
    labels: np.ndarray  # (N, n_labels) float32 0/1, label-set order

    def __len__(self) -> int:
        return len(self.volume_names)


def labelled_split(dataset, split: str) -> LabelledSplit:
    """The cases of one split with their labels; an empty split or a dataset without labels is an
    error, since nothing could be trained or judged on it."""
    cases = dataset.split(split)
    if not cases:
        raise DatasetError(f"the {split!r} split is empty ({dataset.split_source}); the image model needs "
                           "train, valid and test cases", dataset.root)
    if cases[0].labels is None:
        raise DatasetError("dataset has no labels CSV; the classifier needs one 0/1 column per finding", dataset.root)
    return LabelledSplit(split, [c.volume_name for c in cases], np.stack([c.labels for c in cases]).astype(np.float32))


def check_label_sets_agree(ours: LabelSet, theirs: LabelSet, what: str, path=None) -> None:
    """The image model being extended must predict the same findings in the same order."""
    names = tuple(theirs.names)
    if names != tuple(ours.names):
        missing = [n for n in ours.names if n not in names]
        extra = [n for n in names if n not in ours.names]
        detail = f"lacks {missing}, has extra {extra}" if (missing or extra) else "same names in another order"
        raise ConfigError(f"label set of {what} disagrees with the dataset's {ours.name!r}: {detail}", path)


@torch.no_grad()
def fold_input_affine(head: AbnormalityHead, shift: torch.Tensor, scale: torch.Tensor) -> None:
    """Rewrite `head` in place so that head(z) equals the trained head((z - shift) * scale).

    The heads are trained on standardised (or rescaled) latents, which Adam fits in far fewer steps
    than raw unit-norm latents, and then saved as a plain AbnormalityHead on the raw latent: the
    affine is exact algebra on the first Linear (W' = W·diag(scale), b' = b − W'·shift)."""
    first = head.proj if head.config.hidden else head.out
    w = first.weight * scale.to(first.weight)[None, :]
    first.bias.sub_(w @ shift.to(w))
    first.weight.copy_(w)


def report_table(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], thresholds, label_set: LabelSet):
    """One DataFrame with a `split` column: classification_report of each split given."""
    import pandas as pd

    tables = []
    for split in probs:
        table = classification_report(probs[split], labels[split], thresholds, label_set.names)
        table.insert(0, "split", split)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def write_report(out: Path, table, title: str, rule: str | None = None) -> None:
    """classifier_report.csv (every column) and .md (AUROC/F1/sensitivity/specificity per split, how
    the thresholds were chosen when `rule` says it, and the positives per case they give)."""
    out = Path(out)
    table.to_csv(out / REPORT_CSV, index=False)
    lines = [f"# {title}", ""]
    if rule:
        lines += [f"Thresholds: {rule}. A finding at or above its threshold is listed as positive; one with valid "
                  f"AUROC below {WEAK_AUROC} is marked ⚠ wherever it is listed.", ""]
    for split, part in table.groupby("split", sort=False):
        rows = part[part.name != "macro"]
        called, truth = _positives_per_case(rows)
        lines += [f"## {split} ({int(part.n_pos.iloc[0] + part.n_neg.iloc[0])} cases)", "",
                  f"Findings called positive per case: {_num(called)} (truth: {_num(truth)}).", "",
                  "| finding | n_pos | threshold | AUROC | F1 | sensitivity | specificity |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in part.itertuples():
            lines.append(f"| {row.name} | {row.n_pos} | {_num(row.threshold)} | {_num(row.auroc)} | {_num(row.f1)} | "
                         f"{_num(row.sensitivity)} | {_num(row.specificity)} |")
        lines.append("")
    (out / REPORT_MD).write_text("\n".join(lines))


def _positives_per_case(rows) -> tuple[float, float]:
    """Mean findings called positive per case (true + false positives) and mean true findings per case,
    from a split's per-label rows (sensitivity undefined: no positives to find)."""
    cases = float(rows.n_pos.iloc[0] + rows.n_neg.iloc[0])
    called = (rows.sensitivity.fillna(0) * rows.n_pos + (1 - rows.specificity.fillna(1)) * rows.n_neg).sum()
    return float(called) / cases, float(rows.n_pos.sum()) / cases


def per_label_auroc(table, split: str, names) -> list[float]:
    """AUROC of each label of `names` (in that order) in `split` of a report table (NaN if undefined)."""
    rows = table[table.split == split].set_index("name").auroc
    return [float(rows.get(n, float("nan"))) for n in names]


def report_valid_auroc(image_root: Path, names) -> list[float] | None:
    """Per-label valid AUROC from an image model's classifier_report.csv (image models written
    before image_model.json carried it); None when there is no report."""
    import pandas as pd

    path = Path(image_root) / REPORT_CSV
    if not path.is_file():
        return None
    try:
        return per_label_auroc(pd.read_csv(path), "valid", names)
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def macro_auroc(table, split: str) -> float:
    row = table[(table.split == split) & (table.name == "macro")]
    return float(row.auroc.iloc[0])


def _num(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{float(x):.3f}"


def write_image_model(
    out: Path,
    *,
    label_set: LabelSet,
    preprocess,
    encoder_spec: EncoderSpec,
    head: AbnormalityHead,
    thresholds,
    notes: dict,
    valid_auroc=None,
    provenance: Provenance | None = None,
    tuned_last_layer: dict | None = None,
) -> Path:
    """Save the head as IMAGE/classifier.safetensors and IMAGE/image_model.json beside it, with its
    provenance (by default image_model_provenance's)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().float().contiguous() for k, v in head.state_dict().items()}, str(out / CLASSIFIER_FILE))
    config = ImageModelConfig(
        label_set=label_set,
        preprocess=preprocess,
        encoder=encoder_spec,
        classifier=ClassifierSpec(config=head.config, weights=CLASSIFIER_FILE,
                                  thresholds=[float(t) for t in thresholds],
                                  valid_auroc=json_floats(valid_auroc)),
        notes=notes,
        provenance=provenance or image_model_provenance(out, encoder_spec, notes),
        tuned_last_layer=tuned_last_layer,
    )
    return save_image_model(out, config)


TRAINED_HERE = "rad3d train-encoder"  # the origin of an encoder trained by the project (notes' trained_by)


def image_model_provenance(out: Path, encoder_spec: EncoderSpec, notes: dict) -> Provenance:
    """What an image model is made from: the dataset its recipe trained on (notes["data"]) and its
    encoder, which `rad3d train-encoder` trained here, or which comes with the provenance of the
    image model or run it was taken from, or else is described from its weights file."""
    weights = Path(encoder_spec.weights)
    weights = weights if weights.is_absolute() else Path(out) / weights
    if notes.get("trained_by") == TRAINED_HERE:
        base = Provenance(encoder=describe_encoder(weights, origin=TRAINED_HERE, licence=PROJECT_LICENCE))
    else:
        base = weights_provenance(weights)
    data = notes.get("data")
    return base.merged(data=describe_dataset(data)) if data else base


def weights_provenance(weights: Path) -> Provenance:
    """The provenance of encoder weights: that of the image model or run folder holding them (its
    datasets trained them), else the file's own description (e.g. a CT-CLIP checkpoint)."""
    from engine.rundir import load_image_model

    try:
        _, cfg = load_image_model(weights.parent)
    except Rad3dError:
        cfg = None
    if cfg is not None and Path(cfg.encoder.weights).resolve() == weights.resolve() and cfg.provenance.encoder:
        return dataclasses.replace(cfg.provenance, decoder=None)  # a run's decoder is no part of an image model
    return Provenance(encoder=describe_encoder(weights))


def weights_reference(weights: str | Path, out: Path) -> str:
    """How image_model.json names an encoder weights file: relative when it lies inside IMAGE (the
    folder then moves as one), absolute otherwise."""
    weights, out = Path(weights).resolve(), Path(out).resolve()
    try:
        return str(weights.relative_to(out))
    except ValueError:
        return str(weights)
