"""`rad3d report VOLUME --run RUN`: the label probabilities and a generated report for one volume."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="generate a draft report for one CT volume",
        description="Read one volume (NIfTI, MetaImage or NRRD file, DICOM folder or zipped series), print the probability "
        "of each finding and the generated findings text.",
    )
    p.add_argument("volume", help="a .nii/.nii.gz, .mha/.mhd or .nrrd/.nhdr file, a DICOM series folder or a "
                   ".zip of one series")
    p.add_argument("--run", required=True, help="run directory (config.json + weights)")
    p.add_argument("--rescale", nargs=2, type=float, metavar=("SLOPE", "INTERCEPT"),
                   help="HU = SLOPE * stored + INTERCEPT on top of the file's own scaling (CT-RATE's "
                        "metadata CSV values, e.g. 1 -1024; the voxels are then used as stored)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens")
    p.add_argument("--beams", type=int, default=None, help="beam width (1 = greedy, the paper's setting)")
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from engine.inference import InferenceSession

    session = InferenceSession.load(args.run, device=args.device)
    overrides = {
        k: v
        for k, v in (
            ("max_new_tokens", args.max_new_tokens),
            ("num_beams", args.beams),
            ("repetition_penalty", args.repetition_penalty),
        )
        if v is not None
    }
    settings = dataclasses.replace(session.settings, **overrides)
    volume = args.volume
    if args.rescale:
        from engine.io import load_volume

        # CT-RATE's files: rescale from the metadata CSV and voxels as stored, as CT-CLIP used them
        volume = load_volume(args.volume, rescale=tuple(args.rescale), reorient=False)
    result = session.report(volume, settings)
    if args.json:
        print(json.dumps({
            "volume": result.source,
            "run": str(session.run.root),
            "variant": session.run.config.variant,
            "probabilities": result.probabilities,
            "positives": result.positives,
            "report": result.report,
            "section": session.run.config.report_section,
            "finished": result.finished,
            "timings": result.timings,
            "provenance": session.provenance.to_dict(),
        }, indent=2))
        return 0
    width = max(len(n) for n in result.probabilities)
    print(f"{result.source}  (run {session.run.root.name}, variant {session.run.config.variant})")
    print("\n".join(session.provenance.lines()) + "\n")
    print(f"{'finding':<{width}}  probability  threshold")
    for (name, prob), thr in zip(result.probabilities.items(), session.thresholds):
        mark = "  *" if prob >= thr else ""
        print(f"{name:<{width}}  {prob:11.3f}  {thr:9.3f}{mark}")
    print("\n* at or above the finding's threshold\n")
    print(f"{session.run.config.report_section.capitalize()} (generated draft):")
    print(result.report or "(empty)")
    if not result.finished:
        print(f"[cut at {result.n_tokens} tokens]")
    print(f"[model trained on {session.provenance.trained_on()}]")
    t = result.timings
    print(f"\n{t['total_s']:.1f} s: read {t['load_s']:.1f}, preprocess {t['preprocess_s']:.1f}, "
          f"encode {t['encode_s']:.1f}, generate {t['generate_s']:.1f}")
    return 0
