"""AbnormalityHead: the multi-label classifier over the image latent (18 CT-RATE findings), its
class-weighted loss, per-class thresholds and the per-class report.

The paper adds "a classification layer" on the CT-CLIP latent trained with class-weighted binary
cross-entropy; hidden = 0 gives exactly that (one Linear), hidden > 0 a small MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.model_configs import (  # defined without torch
    DEFAULT_MIN_SPECIFICITY,
    DEFAULT_THRESHOLD_METHOD,
    AbnormalityHeadConfig,
    check_threshold_method,
)


class AbnormalityHead(nn.Module):
    def __init__(self, config: AbnormalityHeadConfig = AbnormalityHeadConfig()):
        super().__init__()
        self.config = config
        if config.hidden:
            self.proj = nn.Linear(config.in_dim, config.hidden)
            self.act = nn.GELU()
            self.dropout = nn.Dropout(config.dropout)
            self.out = nn.Linear(config.hidden, config.n_labels)
        else:
            self.dropout = nn.Dropout(config.dropout)
            self.out = nn.Linear(config.in_dim, config.n_labels)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) latent → (B, n_labels) logits (no sigmoid)."""
        x = latent
        if self.config.hidden:
            x = self.act(self.proj(x))
        return self.out(self.dropout(x))


# Below this validation AUROC a finding's probability says little about the case: the app draws such
# findings pale and `rad3d report` marks them, so a weak classifier's positives are not taken at face value.
WEAK_AUROC = 0.7


def is_weak(auroc: float | None) -> bool:
    """Whether a finding's validation AUROC (None: unknown) is below WEAK_AUROC."""
    return auroc is not None and auroc < WEAK_AUROC


def mark_weak(names: Sequence[str], valid_auroc: dict[str, float | None] | None) -> list[str]:
    """The finding names, each the classifier is weak on marked ⚠ (as the app and `rad3d report` show them)."""
    return [f"{n} ⚠" if valid_auroc is not None and is_weak(valid_auroc.get(n)) else n for n in names]


def at_threshold(probs, thresholds) -> np.ndarray:
    """Where a probability is at or above its finding's threshold: the one rule that makes a positive
    (broadcast over cases: (..., n_labels) probabilities, (n_labels,) thresholds)."""
    return np.asarray(probs, dtype=float) >= np.asarray(thresholds, dtype=float)


def class_weighted_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Mean over cases and labels of −[w·y·log σ(x) + (1 − y)·log(1 − σ(x))], w per label."""
    return F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight.to(logits.device, logits.dtype)
    )


def pos_weight_from_prevalence(labels, min_weight: float = 1.0, max_weight: float = 100.0) -> torch.Tensor:
    """neg/pos per label from a (N, n_labels) 0/1 matrix, clamped to [min_weight, max_weight]; a label
    with no positives gets max_weight (no positives: the weight cannot be estimated)."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
    if y.dim() != 2:
        raise ValueError(f"labels must be (cases, labels), got shape {tuple(y.shape)}")
    pos = y.sum(0)
    neg = y.shape[0] - pos
    ratio = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, max_weight))
    return ratio.clamp(min_weight, max_weight).float()


def threshold_rule(method: str = DEFAULT_THRESHOLD_METHOD, min_specificity: float = DEFAULT_MIN_SPECIFICITY) -> str:
    """The rule in words, as the classifier report and the README state it."""
    check_threshold_method(method, min_specificity)
    floor = f"specificity on the valid split is at least {min_specificity:.2f}"
    return {
        "youden-floor": f"per finding, of the thresholds at which {floor} (at most {1 - min_specificity:.0%} of valid "
                        "cases without the finding called positive), the one with the highest sensitivity + "
                        "specificity; a finding no such threshold separates from chance is never called positive",
        "specificity": f"per finding, the lowest threshold at which {floor} (a rule-in point: the most sensitive one "
                       f"that calls at most {1 - min_specificity:.0%} of valid cases without the finding positive)",
        "youden": "per finding, the valid-split threshold with the highest sensitivity + specificity (Youden)",
        "f1": "per finding, the valid-split threshold maximising F1",
    }[method]


def choose_thresholds(probs, labels, method: str = DEFAULT_THRESHOLD_METHOD,
                      min_specificity: float = DEFAULT_MIN_SPECIFICITY) -> np.ndarray:
    """Per-label decision thresholds chosen on validation data (a case is positive at p >= threshold).

    method "youden-floor": of the thresholds whose specificity on these data is >= min_specificity,
    the one maximising sensitivity + specificity − 1 (ties: the highest); where none beats chance the
    threshold is 1.0, i.e. never positive;
    method "specificity": the lowest threshold whose specificity is >= min_specificity (the most
    sensitive operating point that keeps false positives at or below 1 − min_specificity);
    method "youden": the ROC point maximising sensitivity + specificity − 1;
    method "f1": the probability threshold maximising F1 of that label (precision–recall curve).
    A label whose validation labels are all one value gets 0.5 (nothing to choose from).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    threshold_rule(method, min_specificity)  # an unknown method fails here, before any work
    p, y = _as_matrix(probs, labels)
    thresholds = np.full(p.shape[1], 0.5)
    for j in range(p.shape[1]):
        if len(np.unique(y[:, j])) < 2:
            continue
        if method == "f1":
            precision, recall, cuts = precision_recall_curve(y[:, j], p[:, j])
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            thresholds[j] = cuts[int(np.argmax(f1))]
            continue
        # every distinct probability is a cut (no point dropped), highest first; the first is +inf
        fpr, tpr, cuts = roc_curve(y[:, j], p[:, j], drop_intermediate=False)
        allowed = np.ones(len(cuts), bool) if method == "youden" else 1 - fpr >= min_specificity - 1e-12
        if method == "specificity":  # fpr rises as the cut falls: the last cut within the floor is the lowest
            best = int(np.flatnonzero(allowed)[-1])
        else:
            best = int(np.argmax(np.where(allowed, tpr - fpr, -np.inf)))  # first maximum: the highest cut
        thresholds[j] = min(cuts[best], 1.0)  # +inf (nothing beats chance within the floor): 1.0
    return thresholds


def classification_report(probs, labels, thresholds, names: Sequence[str]):
    """A pandas DataFrame, one row per label plus a "macro" row (mean over labels, NaN skipped):
    name, threshold, n_pos, n_neg, auroc, f1, sensitivity, specificity, note. AUROC is NaN when the
    label has a single value in `labels` (undefined), and the note says so; sensitivity is NaN with
    no positives, specificity NaN with no negatives."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

    p, y = _as_matrix(probs, labels)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), (p.shape[1],))
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} names for {p.shape[1]} labels")
    rows = []
    for j, name in enumerate(names):
        truth, pred = y[:, j], at_threshold(p[:, j], thresholds[j]).astype(int)
        n_pos, n_neg = int(truth.sum()), int(len(truth) - truth.sum())
        tn, fp, fn, tp = confusion_matrix(truth, pred, labels=[0, 1]).ravel()
        note = ""
        if n_pos == 0 or n_neg == 0:
            auroc = float("nan")
            note = f"AUROC undefined: only {'negatives' if n_pos == 0 else 'positives'}"
        else:
            auroc = float(roc_auc_score(truth, p[:, j]))
        rows.append(
            {
                "name": name,
                "threshold": float(thresholds[j]),
                "n_pos": n_pos,
                "n_neg": n_neg,
                "auroc": auroc,
                "f1": float(f1_score(truth, pred, zero_division=0)),
                "sensitivity": tp / (tp + fn) if n_pos else float("nan"),
                "specificity": tn / (tn + fp) if n_neg else float("nan"),
                "note": note,
            }
        )
    table = pd.DataFrame(rows)
    metrics = ["auroc", "f1", "sensitivity", "specificity"]
    macro = {"name": "macro", "threshold": float("nan"), "n_pos": table.n_pos.sum(), "n_neg": table.n_neg.sum()}
    macro.update({m: float(np.nanmean(table[m])) if table[m].notna().any() else float("nan") for m in metrics})
    macro["note"] = "mean over labels, undefined values skipped"
    return pd.concat([table, pd.DataFrame([macro])], ignore_index=True)


def _as_matrix(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=float)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(int)
    if p.ndim == 1:
        p, y = p[:, None], y.reshape(-1, 1)
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} differ in shape")
    return p, y
