"""Agreement of rad3d's finding extractor with reports labelled by hand for CT-RATE's 18 findings.

    python3 scripts/extractor_agreement.py LABELLED.csv [MORE.csv ...] [--strict] [--show-errors]

Each CSV has a `report_text` column and one 0/1 column per finding, named as in the label set
(the layout of CT-CLIP's `text_classifier/data/*.csv`; CC BY-NC-SA 4.0, so no such data is kept
in this repository: pass your own copy). Prints per-finding precision, recall and F1 of
"positive" (by default positive or uncertain, as the clinical metric counts; --strict: positive
only) against the labels, then micro and macro figures.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from study.findings import EXTRACTOR_VERSION, FindingExtractor, FindingStatus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+")
    parser.add_argument("--strict", action="store_true", help="count only 'positive' (not 'uncertain') as found")
    parser.add_argument("--show-errors", action="store_true", help="print each disagreement with its sentences")
    args = parser.parse_args(argv)
    extractor = FindingExtractor()
    names = list(extractor.label_set.names)
    frames = []
    for path in args.csv:
        try:
            frame = pd.read_csv(path, encoding="utf-8-sig")
        except (OSError, ValueError) as err:
            print(f"{path}: cannot read: {err}", file=sys.stderr)
            return 1
        missing = [c for c in ["report_text", *names] if c not in frame.columns]
        if missing:
            print(f"{path}: missing columns {', '.join(missing)}", file=sys.stderr)
            return 1
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    truth = data[names].to_numpy().astype(bool)
    found = {FindingStatus.POSITIVE} | (set() if args.strict else {FindingStatus.UNCERTAIN})
    pred = np.zeros_like(truth)
    for i, text in enumerate(data["report_text"].fillna("")):
        statuses = extractor.extract(text)
        pred[i] = [statuses[n] in found for n in names]
        if args.show_errors:
            for j in np.flatnonzero(pred[i] != truth[i]):
                kind = "FP" if pred[i, j] else "FN"
                said = [f"[{m.status.value}] {m.sentence}" for m in extractor.mentions(text) if m.finding == names[j]]
                print(f"{kind} row {i + 2} {names[j]}: " + (" | ".join(said) or "(not mentioned)"))
    tp, fp, fn = (truth & pred).sum(0), (pred & ~truth).sum(0), (truth & ~pred).sum(0)
    print(f"{EXTRACTOR_VERSION}; {len(data)} reports; found = {'positive' if args.strict else 'positive or uncertain'}")
    print(f"{'finding':34s} {'n':>4s} {'TP':>4s} {'FP':>4s} {'FN':>4s} {'P':>5s} {'R':>5s} {'F1':>5s}")
    f1s = []
    with np.errstate(invalid="ignore", divide="ignore"):
        p, r = tp / (tp + fp), tp / (tp + fn)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    for j, name in enumerate(names):
        f1s.append(f1[j])
        print(f"{name:34s} {truth[:, j].sum():4d} {tp[j]:4d} {fp[j]:4d} {fn[j]:4d} {p[j]:5.2f} {r[j]:5.2f} {f1[j]:5.2f}")
    T, F, N = tp.sum(), fp.sum(), fn.sum()
    print(f"micro P {T / max(T + F, 1):.3f} R {T / max(T + N, 1):.3f} F1 {2 * T / max(2 * T + F + N, 1):.3f}; "
          f"macro F1 {np.nanmean(f1s):.3f} (findings with a label or a prediction)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
