"""`rad3d vqa build`: (re)write a phantom dataset's vqa.csv from its phantom_truth.json and show what it holds."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "vqa", help="visual question answering data: questions about phantoms from their ground truth",
        description="Questions about each phantom in M3D-VQA's closed (four choices) and open forms, made from "
        "phantom_truth.json and stored as vqa.csv beside the reports (columns: VolumeName, QuestionType, Form, "
        "Question, ChoiceA-D, Answer, AnswerChoice). `rad3d synth` writes it too.")
    sub = p.add_subparsers(dest="vqa_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="(re)write DIR/vqa.csv from DIR/phantom_truth.json",
                       description="Write vqa.csv for an existing phantom dataset (either layout) and print the items "
                       "per question type, form and split (the dataset's split: a patient is on one side).")
    from engine.data import add_data_arguments
    from engine.vqa import QUESTION_TYPES

    add_data_arguments(b, help="phantom dataset folder (written by `rad3d synth`)")
    b.add_argument("--seed", type=int, default=None, help="question seed (default: the dataset's synth seed)")
    b.add_argument("--types", nargs="+", choices=QUESTION_TYPES, default=list(QUESTION_TYPES),
                   help="question types to make (default: all)")
    b.set_defaults(handler=run_build)


def counts_table(by_split: dict) -> str:
    """Items per question type and form (rows) and split (columns), as aligned text."""
    import pandas as pd

    rows = [{"type": i.question_type, "form": i.form, "split": split} for split, items in by_split.items()
            for i in items]
    if not rows:
        return "(no items)"
    table = pd.crosstab([pd.Series([r["type"] for r in rows], name="type"),
                         pd.Series([r["form"] for r in rows], name="form")],
                        pd.Series([r["split"] for r in rows], name="split"), margins=True, margins_name="all")
    return table.to_string()


def run_build(args: argparse.Namespace) -> int:
    from engine.data import resolve, source_from_args
    from engine.synth.vqa import build_vqa
    from engine.vqa import dataset_vqa

    source = source_from_args(args)
    dataset = resolve(source, section=None)  # checks the dataset before anything is written
    path, items = build_vqa(dataset.root, seed=args.seed, types=args.types)
    by_split = dataset_vqa(dataset)  # read back: the file validates and each item takes its volume's split
    closed = [i for i in items if i.form == "closed"]
    letters = {x: sum(i.answer_letter == x for i in closed) for x in "ABCD"}
    print(f"wrote {len(items)} questions about {len({i.volume_name for i in items})} volumes to {path}")
    print(counts_table(by_split))
    print("closed answers by letter: " + ", ".join(f"{k} {v}" for k, v in letters.items()))
    return 0
