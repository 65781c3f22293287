"""`rad3d report VOLUME --run RUN`: the label probabilities and a generated report for one volume."""

from __future__ import annotations

import argparse


def register(subparsers, consistency=None) -> None:
    """`consistency`: study.consistency.ReportConsistency, handed in by cli.wiring (engine may not
    import study): each finding's statement in the draft beside its probability, disagreements flagged."""
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
    p.add_argument("--force", action="store_true",
                   help="write a draft even for a scan outside the run's domain (not a chest CT, or image features far "
                   "from the training scans); the draft is then marked as such")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    if consistency is not None:
        consistency.add_arguments(p)
    p.set_defaults(handler=run, consistency=consistency)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time

    from engine.io import load_volume

    # The volume first: a bad or missing file is refused in well under a second, before the
    # models (seconds to load) are touched.
    start = time.perf_counter()
    if args.rescale:
        # CT-RATE's files: rescale from the metadata CSV and voxels as stored, as CT-CLIP used them
        volume = load_volume(args.volume, rescale=tuple(args.rescale), reorient=False)
    else:
        volume = load_volume(args.volume)
    read_s = time.perf_counter() - start
    body = _refuse_outside_body_region(volume, args)
    from engine.multimodal_run import is_multimodal_run

    if is_multimodal_run(args.run):
        return _multimodal_report(volume, args)

    from engine.inference import InferenceSession  # torch and the models: only for a readable volume

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
    result = session.report(volume, settings, refuse_outside=not args.force, body=body)
    result.timings["load_s"] = result.timings.get("load_s", 0.0) + read_s
    result.timings["total_s"] = result.timings.get("total_s", 0.0) + read_s
    check = _consistency(args, result, session.image)
    if args.json:
        print(json.dumps(_json(result, session, check), indent=2))
    else:
        _print_text(result, session, check)
    return 0


def _consistency(args, result, image):
    """The draft beside the classifier (study's check, handed in as args.consistency; none: nothing)."""
    from types import SimpleNamespace

    hook = getattr(args, "consistency", None)
    cfg = hook.config(args) if hook else None
    checks = hook.check(result.report, list(result.probabilities.values()), image, cfg) if hook else []
    draft = hook.guarded_text(result.report, checks) if hook and cfg.guarded else result.report
    return SimpleNamespace(hook=hook, cfg=cfg, checks=checks, flags=[c for c in checks if c.disagreement], draft=draft)


def _json(result, session, check) -> dict:
    hook, cfg = check.hook, check.cfg
    return {
        "volume": result.source,
        "run": str(session.run.root),
        "variant": session.run.config.variant,
        "probabilities": result.probabilities,
        "positives": result.positives,
        "weak_findings": [n for n in result.positives if session.image.is_weak(n)],
        "report": result.report,
        **({"consistency": {"settings": cfg.to_dict(), "findings": [hook.to_dict(c) for c in check.checks],
                            "flags": [c.finding for c in check.flags]},
            **({"guarded_report": check.draft} if cfg.guarded else {})} if hook else {}),
        "section": session.run.config.report_section,
        "finished": result.finished,
        "timings": result.timings,
        "provenance": session.provenance.to_dict(),
        "domain": result.domain.to_dict() if result.domain else None,
    }


def _print_text(result, session, check) -> None:
    from engine.classifier import WEAK_AUROC

    image, hook = session.image, check.hook
    width = max(len(n) for n in result.probabilities)
    print(f"{result.source}  (run {session.run.root.name}, variant {session.run.config.variant})")
    print("\n".join(session.provenance.lines()) + "\n")
    auroc = image.valid_auroc or {}
    said = {c.finding: c for c in check.checks}
    print(f"{'finding':<{width}}  probability  threshold  valid AUROC" + ("  draft says" if hook else ""))
    for (name, prob), thr in zip(result.probabilities.items(), image.thresholds):
        a = auroc.get(name)
        mark = ("  *" if name in result.positives else "") + ("  ⚠" if image.is_weak(name) else "")
        shown = "          –" if a is None else f"{a:11.3f}"
        c = said.get(name)
        draft_says = "" if c is None else f"  {c.statement.value:<13}" + ("  ⚑ " + c.disagreement if c.disagreement else "")
        print(f"{name:<{width}}  {prob:11.3f}  {thr:9.3f}  {shown}{draft_says}{mark}")
    print(f"\n* at or above the finding's threshold; ⚠ the classifier is weak on this finding (validation AUROC "
          f"below {WEAK_AUROC}): its probability says little about this case")
    if hook:
        print(f"⚑ the draft disagrees with a confident score (|logit(p) - logit(threshold)| >= {check.cfg.margin:g}, "
              f"validation AUROC >= {check.cfg.min_auroc:g}): it asserts a finding scored low, or denies or omits one "
              f"scored high")
    print()
    outside = result.domain is not None and not result.domain.in_domain
    if outside:
        print(f"!! {result.domain.message()} (--force): the draft below is not to be trusted\n")
    mark = ", OUTSIDE THE MODEL'S DOMAIN" if outside else ""
    print(f"{session.run.config.report_section.capitalize()} (generated draft{mark}):")
    print(check.draft or "(empty)")
    if not result.finished:
        print(f"[cut at {result.n_tokens} tokens]")
    if hook:
        print("\nReport vs classifier: " + (f"{len(check.flags)} finding(s) flagged" if check.flags else "no disagreement"))
        for c in check.flags:
            print(hook.flag_line(c))
    print(f"[model trained on {session.provenance.trained_on()}]")
    t = result.timings
    print(f"\n{t['total_s']:.1f} s: read {t['load_s']:.1f}, preprocess {t['preprocess_s']:.1f}, "
          f"encode {t['encode_s']:.1f}, generate {t['generate_s']:.1f}")


def _refuse_outside_body_region(volume, args):
    """The body-region half of the domain guard needs no model: a head or abdomen is refused before
    anything loads (the feature half runs after encoding, in InferenceSession.report). Returns the
    BodyRegion for the session to reuse (None when the run does not check it)."""
    from engine.domain import DomainCheck, body_region
    from engine.errors import ConfigError, OutOfDomainError
    from engine.rundir import open_run

    try:
        guard = open_run(args.run, check=False).config.domain_guard
    except ConfigError:
        guard = None  # a broken run is reported by the loader, with every missing part named
    if guard is not None and not guard.body_region:
        return None
    body = body_region(volume)
    if not body.is_chest and not args.force:
        raise OutOfDomainError(DomainCheck(body, None, None).message() + " (--force writes a marked draft anyway)",
                               volume.source)
    return body


def _multimodal_report(volume, args) -> int:
    """The report of a multimodal run (task report): its section's instruction, the answer streamed."""
    import dataclasses
    import json
    import sys

    from engine.errors import ConfigError
    from engine.multimodal_run import open_multimodal_run

    run = open_multimodal_run(args.run)
    if "report" not in run.config.tasks:
        raise ConfigError(f"run {run.root.name} was trained for {', '.join(run.config.tasks)} only, not to write "
                          "reports", run.root)
    if args.beams not in (None, 1) or args.repetition_penalty is not None:
        raise ConfigError("a multimodal run's report is greedy: --beams and --repetition-penalty do not apply")
    from engine.multimodal_session import MultimodalSession

    session = MultimodalSession.load(args.run, device=args.device)
    settings = session.settings if args.max_new_tokens is None else dataclasses.replace(
        session.settings, max_new_tokens=args.max_new_tokens)
    section = run.config.report_section
    if not args.json:
        print(f"{volume.source}  (run {run.root.name}, multimodal stage {run.config.stage})\n")
        print(f"{section.capitalize()} (generated draft):")
    shown = ""
    for item in session.answer_stream(volume, session.report_instruction(), settings):
        if isinstance(item, str):
            if not args.json:
                sys.stdout.write(item[len(shown):])
                sys.stdout.flush()
            shown = item
        else:
            answer = item
    if args.json:
        print(json.dumps({"volume": answer.source, "run": str(run.root), "system": "multimodal",
                          "stage": run.config.stage, "report": answer.text, "section": section,
                          "timings": answer.timings, "provenance": run.config.provenance.to_dict()}, indent=2))
    else:
        print(f"\n[model trained on {run.config.provenance.trained_on()}]")
        print(f"{answer.timings['total_s']:.1f} s: image {answer.timings['image_s']:.1f}, "
              f"generate {answer.timings['generate_s']:.1f}")
    return 0
