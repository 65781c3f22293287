"""How far the questions of a dataset's vqa.csv can be answered without the image: an answer-prior
baseline scored by study.metrics.vqa. A model that only read the question text can do about this well,
so a VQA model's accuracy means something only above it.

The prior: for each test item, the answer most often right among the train items with the same question
text (a closed item picks the choice with the highest such count; ties go to the earlier letter),
falling back to the most common right answer of its question type when the train split never asked it.

    python3 bench/vqa_prior.py --data DIR [--split test] [--meteor] [--bertscore]
"""

from __future__ import annotations

import argparse
from collections import Counter


def prior_predictions(train, items) -> list[str]:
    """M3D-style outputs ("B. Left" closed, "Left" open) from the train split's answer counts."""
    by_question: dict[str, Counter] = {}
    by_type: dict[str, Counter] = {}
    for item in train:
        by_question.setdefault(item.question, Counter())[item.answer] += 1
        by_type.setdefault(item.question_type, Counter())[item.answer] += 1
    out = []
    for item in items:
        counts = by_question.get(item.question) or by_type.get(item.question_type, Counter())
        if item.form == "closed":
            scores = [counts[c] for c in item.choices]
            k = scores.index(max(scores))
            out.append(f"{'ABCD'[k]}. {item.choices[k]}")
        else:
            out.append(counts.most_common(1)[0][0] if counts else "")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder with vqa.csv")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--meteor", action="store_true", help="also METEOR (the jar; Java)")
    parser.add_argument("--bertscore", action="store_true", help="also BERTScore (MiniLM)")
    args = parser.parse_args()

    from engine.data import resolve
    from engine.vqa import dataset_vqa
    from study.metrics.vqa import evaluate_vqa, predictions_frame

    by_split = dataset_vqa(resolve(args.data, section=None))
    items = by_split[args.split]
    frame = predictions_frame(items, prior_predictions(by_split["train"], items))
    result = evaluate_vqa(frame, meteor=args.meteor, bertscore=args.bertscore)
    print(f"answer prior from {len(by_split['train'])} train items, scored on {len(items)} {args.split} items of "
          f"{frame['VolumeName'].nunique()} volumes\n")
    print(result.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
