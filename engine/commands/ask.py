"""`rad3d ask VOLUME --run RUN "question" [--choices A B C D]`: a question about one CT volume,
answered by a multimodal run trained for VQA (engine.multimodal_session), streamed as it is written.
Closed questions (with --choices) are put as M3D puts them ("Choices: A. .. B. .."), and the letter
the answer names (M3D's rule: "B." anywhere in it) is printed with its text."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ask",
        help="ask a question about one CT volume (a multimodal run trained for VQA)",
        description="Answers a free or multiple-choice question about one volume with a multimodal run "
        "(rad3d train-multimodal --tasks vqa). Example: rad3d ask scan.nii.gz --run RUN "
        "\"Is there a pleural effusion on the left?\" --choices Yes No",
    )
    p.add_argument("volume", help="a .nii/.nii.gz, .mha/.mhd or .nrrd/.nhdr file, a DICOM series folder or a .zip of one series")
    p.add_argument("question", help="the question (quoted)")
    p.add_argument("--run", required=True, help="a multimodal run directory trained with the vqa task")
    p.add_argument("--choices", nargs="+", metavar="CHOICE", help="2 to 8 answer choices: a closed question (A, B, ...)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from engine.errors import ConfigError
    from engine.io import load_volume
    from engine.multimodal_run import open_multimodal_run
    from engine.multimodal_session import check_question
    from engine.prompts import check_choices, chosen_choice

    # Every check a question, a run or a file can fail comes before any model loads.
    if not args.question.strip():
        raise ConfigError("the question is empty")
    if args.choices is not None:
        check_choices(args.choices)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    run_dir = open_multimodal_run(args.run)
    instruction = check_question(run_dir, args.question, args.choices)
    volume = load_volume(args.volume)

    from engine.multimodal_session import MultimodalSession

    session = MultimodalSession.load(args.run, device=args.device)
    settings = session.settings
    if args.max_new_tokens is not None:
        settings = dataclasses.replace(settings, max_new_tokens=args.max_new_tokens)
    print(f"{volume.source}  (run {session.run.root.name})\nQ:{instruction}\nA: ", end="", flush=True)
    shown = ""
    for item in session.answer_stream(volume, instruction, settings):
        if isinstance(item, str):
            sys.stdout.write(item[len(shown):])
            sys.stdout.flush()
            shown = item
        else:
            answer = item
    print()
    if args.choices:
        picked = chosen_choice(answer.text, args.choices)
        print(f"chosen: {picked[0]}. {picked[1]}" if picked else "chosen: none (the answer names no choice letter)")
    print(f"[{answer.timings['total_s']:.1f} s: image {answer.timings['image_s']:.1f}, "
          f"answer {answer.timings['generate_s']:.1f}]")
    return 0
